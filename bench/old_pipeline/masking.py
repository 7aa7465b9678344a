"""The three masking rules of KMLM pretraining, on one tokenized example.

Every function takes the example's arrays (see `segments.py`) and a numpy
Generator, and returns `(inputs, loss_mask)`: the model's input ids and a
bool [n] array of the positions that carry loss (their targets are the
original ids).

- Text (CC100): BERT masking. Each non-special token is chosen with
  probability `p` (0.15); a chosen token becomes `<mask>` with probability
  0.8, a random regular token with 0.1, and stays with 0.1.
- Knowledge (code-switched / parallel sentences, KMLM section 3.2): linkers
  are always `<mask>` and never carry loss; BERT masking as above over the
  entity and relation tokens only.
- Reasoning (cycles): no random MLM; loss only on the chosen mentions, which
  are always `<mask>`. 3-cycle: all tokens of one random relation mention.
  4-cycle: with probability 0.2 the head and tail entity mentions of one
  random sentence (its relation kept); otherwise one random relation
  mention plus one or two (equal chance) random entity mentions.

Random replacement ids are drawn uniformly from the regular vocabulary
`[first_regular_id, mask_id)`, never a special token (the original drew from
the whole vocabulary).
"""

from __future__ import annotations

import numpy as np

from kmlm_jax.kg.samples import ROLE_ENTITY, ROLE_RELATION

MLM_PROBABILITY = 0.15
WHOLE_SENTENCE_PROBABILITY = 0.2


def _bert_mask(ids: np.ndarray, candidates: np.ndarray, vocab, rng: np.random.Generator,
               p: float) -> tuple[np.ndarray, np.ndarray]:
  chosen = candidates & (rng.random(ids.shape) < p)
  action = rng.random(ids.shape)
  random_ids = rng.integers(vocab.first_regular_id, vocab.mask_id, ids.shape)
  inputs = ids.copy()
  inputs[chosen & (action < 0.8)] = vocab.mask_id
  swap = chosen & (action >= 0.8) & (action < 0.9)
  inputs[swap] = random_ids[swap]
  return inputs, chosen


def mask_text(ids: np.ndarray, vocab, rng: np.random.Generator,
              p: float = MLM_PROBABILITY) -> tuple[np.ndarray, np.ndarray]:
  """BERT masking over every token but the special ones."""
  special = np.isin(ids, [vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.mask_id])
  return _bert_mask(ids, ~special, vocab, rng, p)


def mask_knowledge(ids: np.ndarray, roles: np.ndarray, vocab, rng: np.random.Generator,
                   p: float = MLM_PROBABILITY) -> tuple[np.ndarray, np.ndarray]:
  """BERT masking over entity and relation tokens; linkers stay `<mask>`, no loss."""
  return _bert_mask(ids, (roles == ROLE_ENTITY) | (roles == ROLE_RELATION), vocab, rng, p)


def _mentions(mentions: np.ndarray, roles: np.ndarray, role: int) -> np.ndarray:
  """Distinct mention (segment) ids of a role, in order."""
  return np.unique(mentions[roles == role])


def choose_reasoning_mentions(roles: np.ndarray, mentions: np.ndarray, sentences: np.ndarray,
                              cycle: int, rng: np.random.Generator) -> np.ndarray:
  """The mention ids whose tokens carry loss (see module docstring)."""
  relations = _mentions(mentions, roles, ROLE_RELATION)
  entities = _mentions(mentions, roles, ROLE_ENTITY)
  if cycle == 3:
    return rng.choice(relations, 1)
  if cycle != 4:
    raise ValueError(f"reasoning samples come from 3- or 4-cycles, got cycle={cycle}")
  if rng.random() < WHOLE_SENTENCE_PROBABILITY:
    sentence = rng.choice(np.unique(sentences[sentences >= 0]))
    return np.unique(mentions[(roles == ROLE_ENTITY) & (sentences == sentence)])
  count = 1 if rng.random() < 0.5 else 2
  return np.concatenate([rng.choice(relations, 1), rng.choice(entities, count, replace=False)])


def mask_reasoning(ids: np.ndarray, roles: np.ndarray, mentions: np.ndarray,
                   sentences: np.ndarray, cycle: int, vocab,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  chosen = np.isin(mentions, choose_reasoning_mentions(roles, mentions, sentences, cycle, rng))
  chosen &= (roles == ROLE_ENTITY) | (roles == ROLE_RELATION)
  inputs = ids.copy()
  inputs[chosen] = vocab.mask_id
  return inputs, chosen
