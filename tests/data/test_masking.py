"""The three masking rules (vectorized over blocks): statistics and exact rule checks."""

import collections
import dataclasses

import numpy as np
import pytest

from kmlm_jax.kg.samples import ROLE_ENTITY, ROLE_LINKER, ROLE_RELATION, ROLE_TEXT
from kmlm_jax.data import masking


@dataclasses.dataclass
class FakeVocab:
  bos_id: int = 0
  pad_id: int = 1
  eos_id: int = 2
  unk_id: int = 3
  first_regular_id: int = 4
  mask_id: int = 999


V = FakeVocab()
SPECIAL = masking.SpecialIds(V.bos_id, V.eos_id, V.pad_id, V.mask_id, V.first_regular_id)


def _block(examples, rule, aux=0, first_key=0):
  """Masks a block of (ids, roles, mentions, sentences) examples, example i keyed by
  first_key + i; returns per-example (inputs, loss) pairs."""
  lengths = [len(e[0]) for e in examples]
  cat = [np.concatenate([np.asarray(e[k]) for e in examples]) for k in range(4)]
  m = masking.mask_block(cat[0], cat[1], cat[2], cat[3], lengths,
                         np.full(len(examples), rule), np.full(len(examples), aux),
                         np.arange(first_key, first_key + len(examples), dtype=np.uint64),
                         SPECIAL)
  ends = np.cumsum(lengths)
  return [(m.inputs[b - n:b], m.loss[b - n:b]) for n, b in zip(lengths, ends)]


def _stats(inputs, ids, loss, candidates):
  chosen = loss.sum()
  return dict(rate=chosen / candidates.sum(),
              masked=((inputs == V.mask_id) & loss).sum() / chosen,
              kept=((inputs == ids) & loss).sum() / chosen,
              random=((inputs != ids) & (inputs != V.mask_id) & loss).sum() / chosen)


def test_text_masking_rates_over_200k_tokens():
  rng = np.random.default_rng(0)
  ids = np.concatenate([[0], rng.integers(4, 999, 200_000), [2]])
  none = np.full(len(ids), -1)
  ((inputs, loss),) = _block([(ids, np.zeros(len(ids)), none, none)], masking.RULE_TEXT)
  s = _stats(inputs, ids, loss, np.ones_like(ids, bool)[1:-1])
  # Within 0.5 points of 15% / 80% / 10% / 10%.
  assert abs(s["rate"] - 0.15) < 0.005 and abs(s["masked"] - 0.8) < 0.005
  assert abs(s["random"] - 0.1) < 0.005 and abs(s["kept"] - 0.1) < 0.005
  assert not loss[0] and not loss[-1]  # <s> and </s> never chosen
  assert inputs[loss & (inputs != ids) & (inputs != V.mask_id)].min() >= V.first_regular_id


def _knowledge_example(rng, n_sentences=1):
  roles = []
  for _ in range(n_sentences):
    roles += ([ROLE_ENTITY] * rng.integers(1, 5) + [ROLE_LINKER] + [ROLE_RELATION]
              * rng.integers(1, 4) + [ROLE_LINKER] + [ROLE_ENTITY] * rng.integers(1, 5)
              + [ROLE_TEXT])
  roles = np.array([ROLE_TEXT] + roles + [ROLE_TEXT])
  ids = rng.integers(4, 999, len(roles))
  ids[roles == ROLE_LINKER] = V.mask_id
  ids[0], ids[-1] = 0, 2
  return ids, roles


def test_knowledge_masking_rates_and_linkers():
  rng = np.random.default_rng(1)
  totals = collections.Counter()
  all_in, all_ids, all_loss, all_cand = [], [], [], []
  examples = []
  while totals["tokens"] < 200_000:
    ids, roles = _knowledge_example(rng)
    examples.append((ids, roles, np.full(len(ids), -1), np.full(len(ids), -1)))
    totals["tokens"] += ((roles == ROLE_ENTITY) | (roles == ROLE_RELATION)).sum()
  for (ids, roles, _, _), (inputs, loss) in zip(examples, _block(examples, masking.RULE_KNOWLEDGE)):
    # A linker is always <mask> and never carries loss; text never carries loss.
    assert (inputs[roles == ROLE_LINKER] == V.mask_id).all()
    assert not loss[(roles == ROLE_LINKER) | (roles == ROLE_TEXT)].any()
    cand = (roles == ROLE_ENTITY) | (roles == ROLE_RELATION)
    all_in.append(inputs), all_ids.append(ids), all_loss.append(loss), all_cand.append(cand)
  s = _stats(*(np.concatenate(a) for a in (all_in, all_ids, all_loss)), np.concatenate(all_cand))
  assert abs(s["rate"] - 0.15) < 0.005 and abs(s["masked"] - 0.8) < 0.005
  assert abs(s["random"] - 0.1) < 0.005 and abs(s["kept"] - 0.1) < 0.005


def _cycle_example(n_sentences, entity_of_mention):
  """Tokens of a reasoning sample: per sentence head(2 tokens) L rel(2) L tail(1) '.'"""
  roles, mentions, sentences = [ROLE_TEXT], [-1], [-1]
  seg = 0
  for k in range(n_sentences):
    for role, width in ((ROLE_ENTITY, 2), (ROLE_LINKER, 1), (ROLE_RELATION, 2),
                        (ROLE_LINKER, 1), (ROLE_ENTITY, 1), (ROLE_TEXT, 1)):
      roles += [role] * width
      mentions += [seg] * width
      sentences += [k] * width
      seg += 1
  roles += [ROLE_TEXT]
  mentions += [-1]
  sentences += [-1]
  roles, mentions, sentences = map(np.array, (roles, mentions, sentences))
  ids = np.arange(len(roles)) + 10
  ids[roles == ROLE_LINKER] = V.mask_id
  return ids, roles, mentions, sentences


def test_three_cycle_masks_exactly_one_whole_relation():
  ids, roles, mentions, sentences = _cycle_example(3, None)
  seen = collections.Counter()
  for inputs, loss in _block([(ids, roles, mentions, sentences)] * 3000, masking.RULE_REASONING, 3):
    masked = set(mentions[loss])
    assert len(masked) == 1
    (m,) = masked
    assert roles[mentions == m][0] == ROLE_RELATION
    assert loss[mentions == m].all() and (inputs[loss] == V.mask_id).all()  # whole span, <mask>
    assert (inputs[~loss] == ids[~loss]).all()
    seen[m] += 1
  assert len(seen) == 3 and min(seen.values()) > 900  # each relation about a third


def test_four_cycle_split_over_10k_samples():
  ids, roles, mentions, sentences = _cycle_example(5, None)
  kinds = collections.Counter()
  for inputs, loss in _block([(ids, roles, mentions, sentences)] * 10_000,
                             masking.RULE_REASONING, 4):
    masked = sorted(set(mentions[loss]))
    rel = [m for m in masked if roles[mentions == m][0] == ROLE_RELATION]
    ent = [m for m in masked if roles[mentions == m][0] == ROLE_ENTITY]
    assert all(loss[mentions == m].all() for m in masked)
    if not rel:
      # Whole sentence: its head and tail, relation kept.
      assert len(ent) == 2 and len(set(sentences[np.isin(mentions, ent)])) == 1
      kinds["sentence"] += 1
    else:
      assert len(rel) == 1 and len(ent) in (1, 2)
      kinds[f"relation+{len(ent)}"] += 1
  total = sum(kinds.values())
  assert abs(kinds["sentence"] / total - 0.2) < 0.02
  other = kinds["relation+1"] + kinds["relation+2"]
  assert abs(kinds["relation+1"] / other - 0.5) < 0.02


def test_reasoning_rejects_other_cycle_sizes():
  ids, roles, mentions, sentences = _cycle_example(3, None)
  with pytest.raises(ValueError, match="3- or 4-cycles"):
    _block([(ids, roles, mentions, sentences)], masking.RULE_REASONING, 5)


def test_masking_depends_on_the_example_key_only():
  """An example is masked the same way whatever block it is in (stateless keys)."""
  rng = np.random.default_rng(4)
  examples = [(*_knowledge_example(rng), np.full(1, -1), np.full(1, -1)) for _ in range(50)]
  examples = [(i, r, np.full(len(i), -1), np.full(len(i), -1)) for i, r, _, _ in examples]
  whole = _block(examples, masking.RULE_KNOWLEDGE)
  tail = _block(examples[20:], masking.RULE_KNOWLEDGE, first_key=20)
  for (a, la), (b, lb) in zip(whole[20:], tail):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
  other = _block(examples[20:], masking.RULE_KNOWLEDGE, first_key=21)
  assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(whole[20:], other))
