"""KMLM's masking rules, vectorized over a block of pre-tokenized examples.

A block holds E examples back to back (N tokens). Each
example has a rule, and every random draw is a hash of the example's key
(seed, stream, global example index) and the token index, so an example is
masked the same way whatever block, process or host it lands in.

- RULE_TEXT (CC100): BERT masking. Each non-special token is chosen with
  probability `p` (0.15); a chosen token becomes `<mask>` with probability
  0.8, a random regular token with 0.1, and stays with 0.1.
- RULE_KNOWLEDGE (code-switched / parallel sentences, KMLM section 3.2):
  linkers are `<mask>` (written so by the cache) and never carry loss; BERT
  masking as above over the tokens of the scope (`scope`, the config's
  `data.mask_scope`):
  - "entities" (the default): the entity and relation tokens only, so the
    final `.` never carries loss;
  - "original": every non-special token but the linkers (the final `.`
    included), the scope of the original code's knowledge collator
    (`DataCollatorForSyntheticSentence` in ntunlp/kmlm), which draws its 15%
    over every non-special token and then forces the linker positions to
    `<mask>` without loss. Two differences remain: a chosen linker there
    becomes a random token with probability 0.1 (here it stays `<mask>`),
    and its lines end with ". ", whose trailing `▁` piece is also drawn
    (the samples here have no trailing space).
- RULE_REASONING (cycles): no random MLM; loss only on the chosen mentions,
  which are always `<mask>`. 3-cycle: all tokens of one random relation
  mention. 4-cycle: with probability 0.2 the entity mentions of one random
  sentence (its relation kept); otherwise one random relation mention plus
  one or two (equal chance) distinct random entity mentions.
- RULE_CAUSAL (Prix-LM): no masking; the prefix (`aux` tokens) is
  bidirectional, the loss is next-token prediction of the object's tokens
  and `[EOS]` (`kmlm_jax.text.prixlm.training_example`).

Random replacement ids are drawn uniformly from the regular vocabulary
`[first_regular_id, mask_id)`, never a special token.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kmlm_jax.data import random as srandom
from kmlm_jax.errors import InputError
from kmlm_jax.kg.samples import ROLE_ENTITY, ROLE_LINKER, ROLE_RELATION

RULE_TEXT, RULE_KNOWLEDGE, RULE_REASONING, RULE_CAUSAL = 0, 1, 2, 3
RULE_NAMES = ("text", "knowledge", "reasoning", "causal")
# Which tokens of a knowledge sample the 15% is drawn over (see the module docstring).
SCOPE_ENTITIES, SCOPE_ORIGINAL = "entities", "original"
MASK_SCOPES = (SCOPE_ENTITIES, SCOPE_ORIGINAL)
MLM_PROBABILITY = 0.15
WHOLE_SENTENCE_PROBABILITY = 0.2

# Purposes of the per-token and per-example draws (mixed into their keys).
_CHOOSE, _ACTION, _REPLACE = 1, 2, 3
_BRANCH, _COUNT, _RELATION, _ENTITY_A, _ENTITY_B, _SENTENCE = 11, 12, 13, 14, 15, 16


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """The vocabulary ids masking needs (stored in the token cache's metadata)."""

  bos: int
  eos: int
  pad: int
  mask: int
  first_regular: int

  @classmethod
  def of(cls, vocab) -> "SpecialIds":
    return cls(vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.mask_id, vocab.first_regular_id)


@dataclasses.dataclass
class Masked:
  """Per-token outputs for a block: model inputs, targets, loss and prefix flags."""

  inputs: np.ndarray  # int32 [N]
  targets: np.ndarray  # int32 [N]
  loss: np.ndarray  # bool [N]
  prefix: np.ndarray  # bool [N]


def _rank_within(flag: np.ndarray, example: np.ndarray, starts: np.ndarray) -> np.ndarray:
  """For each token, how many flagged tokens come before it in its example."""
  c = np.cumsum(flag, dtype=np.int64)
  before = np.concatenate([[0], c])[starts]
  return c - flag - before[example]


def knowledge_scope(roles: np.ndarray, special_token: np.ndarray, scope: str) -> np.ndarray:
  """bool [N]: the tokens of knowledge samples the BERT draw covers under `scope`."""
  if scope == SCOPE_ENTITIES:
    return (roles == ROLE_ENTITY) | (roles == ROLE_RELATION)
  if scope == SCOPE_ORIGINAL:
    return ~special_token & (roles != ROLE_LINKER)
  raise InputError(f"data.mask_scope: expected one of {MASK_SCOPES}, got {scope!r}")


def mask_block(tokens, roles, mentions, sentences, lengths, rules, aux, keys,
               special: SpecialIds, p: float = MLM_PROBABILITY,
               scope: str = SCOPE_ENTITIES) -> Masked:
  """Applies each example's rule (see module docstring).

  tokens/roles/mentions/sentences: [N] per token; lengths/rules/aux/keys: [E]
  per example (`aux`: cycle length for reasoning, prefix length for causal);
  scope: the knowledge rule's "entities" or "original".
  """
  lengths = np.asarray(lengths, np.int64)
  starts = np.cumsum(lengths) - lengths
  example = np.repeat(np.arange(len(lengths)), lengths)
  index = np.arange(len(tokens), dtype=np.int64) - starts[example]
  rule = np.asarray(rules)[example]
  token_keys = srandom.key(np.asarray(keys, np.uint64)[example], index)
  inputs = np.asarray(tokens, np.int32).copy()
  targets = inputs.copy()

  special_token = np.isin(tokens, [special.bos, special.eos, special.pad, special.mask])
  bert = ((rule == RULE_TEXT) & ~special_token) | (
      (rule == RULE_KNOWLEDGE) & knowledge_scope(roles, special_token, scope))
  chosen = bert & (srandom.uniform(token_keys ^ np.uint64(_CHOOSE)) < p)
  action = srandom.uniform(token_keys ^ np.uint64(_ACTION))
  inputs[chosen & (action < 0.8)] = special.mask
  swap = chosen & (action >= 0.8) & (action < 0.9)
  if swap.any():
    inputs[swap] = special.first_regular + srandom.below(
        token_keys[swap] ^ np.uint64(_REPLACE), special.mask - special.first_regular)

  reasoning = _reasoning_choice(roles, mentions, sentences, example, starts, rule,
                                np.asarray(aux)[example], np.asarray(keys, np.uint64))
  inputs[reasoning] = special.mask

  causal = rule == RULE_CAUSAL
  prefix_len = np.asarray(aux, np.int64)[example]
  # [O] predicts the first object token, ..., the token before `[EOS]` predicts
  # `[EOS]`; `[EOS]` and the final `</s>` predict nothing.
  causal_loss = causal & (index >= prefix_len - 1) & (index < lengths[example] - 2)
  if causal.any():
    following = np.concatenate([targets[1:], [special.pad]]).astype(np.int32)
    targets = np.where(causal_loss, following, np.where(causal, special.pad, targets))
  prefix = ~causal | (index < prefix_len)
  return Masked(inputs, targets.astype(np.int32), chosen | reasoning | causal_loss, prefix)


def _reasoning_choice(roles, mentions, sentences, example, starts, rule, cycle,
                      keys) -> np.ndarray:
  """bool [N]: the tokens of the mentions the reasoning rule chose."""
  active = rule == RULE_REASONING
  if not active.any():
    return np.zeros(len(roles), bool)
  first = np.zeros(len(roles), bool)
  first[starts] = True
  mention_token = active & ((roles == ROLE_ENTITY) | (roles == ROLE_RELATION))
  new_mention = mention_token & (first | np.concatenate([[True], mentions[1:] != mentions[:-1]]))
  is_rel = new_mention & (roles == ROLE_RELATION)
  is_ent = new_mention & (roles == ROLE_ENTITY)
  in_sentence = active & (sentences >= 0)
  new_sentence = in_sentence & (first | np.concatenate([[True], sentences[1:] != sentences[:-1]]))

  num = lambda flag: np.bincount(example[flag], minlength=len(keys))
  n_rel, n_ent, n_sent = num(is_rel), num(is_ent), num(new_sentence)
  draw = lambda purpose, n: srandom.below(srandom.key(keys, purpose), np.maximum(n, 1))
  cycle = np.asarray(cycle)[starts]  # per example
  four = cycle == 4
  bad = active[starts] & ~four & (cycle != 3)
  if bad.any():
    raise ValueError(f"reasoning samples come from 3- or 4-cycles, got cycle="
                     f"{int(cycle[bad][0])}")
  whole = four & (srandom.uniform(srandom.key(keys, _BRANCH)) < WHOLE_SENTENCE_PROBABILITY)
  two = srandom.uniform(srandom.key(keys, _COUNT)) >= 0.5
  relation = draw(_RELATION, n_rel)
  entity_a = draw(_ENTITY_A, n_ent)
  entity_b = draw(_ENTITY_B, n_ent - 1)
  entity_b = entity_b + (entity_b >= entity_a)
  sentence = draw(_SENTENCE, n_sent)

  ex = example
  rel_rank = _rank_within(is_rel, ex, starts)
  ent_rank = _rank_within(is_ent, ex, starts)
  sent_rank = _rank_within(new_sentence, ex, starts) + new_sentence - 1  # rank of own sentence
  pick_rel = is_rel & ~whole[ex] & (rel_rank == relation[ex])
  pick_ent = is_ent & four[ex] & ~whole[ex] & (
      (ent_rank == entity_a[ex]) | (two[ex] & (ent_rank == entity_b[ex])))
  pick_sentence = is_ent & whole[ex] & (sent_rank == sentence[ex])
  picked_start = pick_rel | pick_ent | pick_sentence
  # Spread each chosen mention's flag from its first token to all its tokens.
  mention_id = np.cumsum(new_mention) - 1
  picked = np.zeros(int(new_mention.sum()), bool)
  picked[mention_id[picked_start]] = True
  return mention_token & picked[np.maximum(mention_id, 0)]
