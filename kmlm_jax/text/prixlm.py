"""Prix-LM sequences (Prix-LM paper section 2.2) and their extended vocabulary.

Special tokens appended after the XLM-R vocabulary: `[S] [P] [O] [EOS]` and
one token per language, `[en]`, `[fr]`, ... A monolingual triple (s, p, o) is

  <s> [S] Xs </s> </s> [P] Xp </s> </s> [O] Xo [EOS] </s>

and a cross-lingual link (an entity e named Xs in language a and Xo in b)
replaces the predicate by the two language tokens:

  <s> [S] Xs </s> </s> [P] [a] [b] </s> </s> [O] Xo [EOS] </s>

Everything up to `[O]` is the prefix (bidirectional attention); the object
is causal. Under `model.attention="causal"` (the released Prix-LM, a
transformers `XLMRobertaForCausalLM`; `kmlm_jax.convert.causal_lm`) the
prefix is causal too: the sequences and the loss stay the same. The loss is next-token prediction over Xo and `[EOS]`: the
hidden state at `[O]` predicts the first object token, ..., the last object
token predicts `[EOS]` (the final `</s>` carries no loss). Names are
tokenized alone (with sentencepiece's leading `▁`), exactly as the entity
trie of link prediction tokenizes them.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from kmlm_jax.errors import InputError

PRIXLM_TOKENS = ("[S]", "[P]", "[O]", "[EOS]")


def added_tokens(languages: Sequence[str]) -> tuple[str, ...]:
  return PRIXLM_TOKENS + tuple(f"[{l}]" for l in languages)


class PrixLMVocabError(InputError):
  """A tokenizer without the Prix-LM tokens a sequence needs."""


def check_vocabulary(added: Sequence[str], source: str, languages: Sequence[str] = ()) -> None:
  """Raises `PrixLMVocabError` unless the added tokens of the tokenizer `source` hold
  `[S] [P] [O] [EOS]` and the language tokens of `languages`."""
  missing = [t for t in added_tokens(languages) if t not in added]
  if missing:
    raise PrixLMVocabError(
        f"{source}: not a Prix-LM vocabulary: it lacks the added tokens {' '.join(missing)} "
        "(add them with kmlm_jax.text.vocab.add_tokens_to_tokenizer_json(SOURCE, "
        "kmlm_jax.text.prixlm.added_tokens(LANGUAGES), TARGET), as kmlm_jax.prixlm_demo does)")


@dataclasses.dataclass(frozen=True)
class PrixLMIds:
  """Ids of the special tokens in a vocabulary extended with `added_tokens`."""

  subject: int
  predicate: int
  object: int
  end: int  # [EOS], end of the object
  languages: dict

  @classmethod
  def of(cls, vocab) -> "PrixLMIds":
    added = getattr(vocab, "added_tokens", ())
    check_vocabulary(added, getattr(vocab, "source", "") or "the tokenizer")
    langs = {t[1:-1]: vocab.token_id(t) for t in added if t not in PRIXLM_TOKENS}
    return cls(*[vocab.token_id(t) for t in PRIXLM_TOKENS], langs)


class UnknownRelationError(InputError):
  """A relation name the tokenizer cannot represent (empty or with `<unk>` pieces)."""


def relation_ids(vocab, predicate: str) -> list[int]:
  """The predicate's tokens; raises `UnknownRelationError` if the tokenizer
  maps it to nothing or to `<unk>` (a query the model could not tell apart
  from other unknown relations)."""
  tokens = vocab.encode(predicate)
  if not tokens or vocab.unk_id in tokens:
    unknown = "no tokens" if not tokens else f"{tokens.count(vocab.unk_id)} <unk> piece(s)"
    raise UnknownRelationError(f"relation {predicate!r} is unknown to the tokenizer "
                               f"{getattr(vocab, 'source', '')} ({unknown})")
  return tokens


def triple_prefix(vocab, ids: PrixLMIds, subject: str, predicate: str, *,
                  check_relation: bool = True) -> list[int]:
  """`<s> [S] Xs </s> </s> [P] Xp </s> </s> [O]`.

  Queries check the relation (`relation_ids`); training passes
  `check_relation=False` and keeps a rare `<unk>` piece as an ordinary token.
  """
  predicate_ids = relation_ids(vocab, predicate) if check_relation else vocab.encode(predicate)
  return ([vocab.bos_id, ids.subject] + vocab.encode(subject)
          + [vocab.eos_id, vocab.eos_id, ids.predicate] + predicate_ids
          + [vocab.eos_id, vocab.eos_id, ids.object])


def link_prefix(vocab, ids: PrixLMIds, subject: str, source_lang: str,
                target_lang: str) -> list[int]:
  """`<s> [S] Xs </s> </s> [P] [a] [b] </s> </s> [O]`."""
  try:
    a, b = ids.languages[source_lang], ids.languages[target_lang]
  except KeyError as e:
    raise PrixLMVocabError(f"no language token for {e.args[0]!r}; the vocabulary has "
                           f"{sorted(ids.languages)}") from None
  return ([vocab.bos_id, ids.subject] + vocab.encode(subject)
          + [vocab.eos_id, vocab.eos_id, ids.predicate, a, b, vocab.eos_id, vocab.eos_id,
             ids.object])


def object_ids(vocab, ids: PrixLMIds, name: str) -> list[int]:
  """The object's tokens followed by `[EOS]` (what the trie holds)."""
  return vocab.encode(name) + [ids.end]


def training_example(vocab, prefix: list[int], obj: list[int]) -> dict[str, np.ndarray]:
  """Arrays of one training sequence (see module docstring).

  input_ids [n], targets [n] (targets[i] = the token predicted at i),
  loss_mask [n] bool (True at `[O]` .. the last object token), prefix_mask
  [n] bool (True on the prefix).
  """
  seq = np.asarray(prefix + obj + [vocab.eos_id], np.int32)
  n, p = len(seq), len(prefix)
  targets = np.full(n, vocab.pad_id, np.int32)
  targets[:-1] = seq[1:]
  loss = np.zeros(n, bool)
  loss[p - 1:p - 1 + len(obj)] = True
  prefix_mask = np.arange(n) < p
  return {"input_ids": seq, "targets": targets, "loss_mask": loss, "prefix_mask": prefix_mask}
