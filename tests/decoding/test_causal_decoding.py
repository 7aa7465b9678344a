"""Decoding under `model.attention="causal"`: the jitted search, Algorithm 1 and the packed
training loss agree on the same fully causal scores."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kmlm_jax.config import preset
from kmlm_jax.data import masking, packing
from kmlm_jax.decoding.beam_search import BeamSearch
from kmlm_jax.decoding.reference import ReferenceSearch, exhaustive_ranking, exhaustive_scores
from kmlm_jax.decoding.trie import build_trie
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.text import prixlm
from kmlm_jax.training.pretraining import forward

VOCAB, EOS = 300, 299


@pytest.fixture(scope="module")
def model():
  config = preset("tiny", vocab_size=VOCAB, max_position_embeddings=130, dropout_rate=0.0,
                  attention_dropout_rate=0.0, initializer_range=0.1, attention="causal")
  return Encoder(config, rngs=nnx.Rngs(3))


def _names(rng, count):
  names = set()
  while len(names) < count:
    names.add(tuple(rng.integers(5, 12, rng.integers(1, 5)).tolist()))
  return [list(n) for n in sorted(names)]


def _prefixes(rng, lengths=(8, 5, 6)):
  ids = np.full((len(lengths), max(lengths)), 1, np.int32)
  for i, n in enumerate(lengths):
    ids[i, :n] = rng.integers(5, VOCAB - 10, n)
  return ids, np.asarray(lengths, np.int32)


def test_search_equals_exhaustive_and_algorithm_1(model):
  rng = np.random.default_rng(0)
  names = _names(rng, 30)
  prefix, lengths = _prefixes(rng)
  exclude = np.array([[-1, -1], [3, 7], [0, -1]])
  result = BeamSearch(model, build_trie(names, EOS), num_beams=32, max_decode_len=6)(
      prefix, lengths, exclude)
  reference = ReferenceSearch(model, names, EOS, num_beams=2, length=16)
  two = BeamSearch(model, build_trie(names, EOS), num_beams=2, max_decode_len=6)(
      prefix, lengths, exclude)
  for i, n in enumerate(lengths):
    skip = exclude[i][exclude[i] >= 0]
    entities, scores = exhaustive_ranking(exhaustive_scores(model, prefix[i, :n], names, EOS),
                                          32, skip)
    np.testing.assert_array_equal(result.entities[i], entities)
    np.testing.assert_allclose(result.scores[i], scores, atol=1e-5, rtol=0)
    entities, scores = reference(prefix[i, :n].tolist(), skip)
    np.testing.assert_array_equal(two.entities[i], entities)
    np.testing.assert_allclose(two.scores[i], scores, atol=1e-5, rtol=0)


def test_packed_training_loss_equals_scores(model):
  """A packed row of an MLM example and Prix-LM examples: each Prix-LM example's summed
  training NLL is the score decoding gives its object."""
  rng = np.random.default_rng(1)

  class V:
    bos_id, pad_id, eos_id = 0, 1, 2

  tokens, lengths, prefix_lens, rules, expected = [], [], [], [], []
  mlm = [0] + rng.integers(5, 290, 9).tolist() + [2]
  tokens, lengths, prefix_lens, rules = list(mlm), [len(mlm)], [0], [masking.RULE_TEXT]
  for _ in range(4):
    prefix = [0] + rng.integers(5, 290, int(rng.integers(4, 10))).tolist() + [297]
    name = rng.integers(5, 290, int(rng.integers(1, 5))).tolist()
    ex = prixlm.training_example(V, prefix, name + [EOS])
    tokens += ex["input_ids"].tolist()
    lengths.append(len(ex["input_ids"]))
    prefix_lens.append(len(prefix))
    rules.append(masking.RULE_CAUSAL)
    expected.append(float(exhaustive_scores(model, prefix, [name], EOS)[0]))
  n, lengths, rules = len(tokens), np.asarray(lengths), np.asarray(rules)
  m = masking.mask_block(np.asarray(tokens), np.zeros(n, np.int8), np.full(n, -1),
                         np.full(n, -1), lengths, rules, np.asarray(prefix_lens),
                         np.zeros(len(rules), np.uint64),
                         masking.SpecialIds(bos=0, eos=2, pad=1, mask=296, first_regular=4))
  rows, _ = packing.pack_block(m.inputs, m.targets, m.loss, m.prefix, lengths, rules,
                               packing.PackSpec(128, 40, 1))
  batch = {k: jnp.asarray(rows[k]) for k in packing.ROW_KEYS}
  assert batch["input_ids"].shape[0] < len(lengths)  # packed: rows hold several examples
  nll = np.asarray(forward(model, batch, None)[0])
  causal = (np.asarray(batch["mlm_terms"]) == masking.RULE_CAUSAL) & (
      np.asarray(batch["mlm_weights"]) > 0)
  seg = np.take_along_axis(np.asarray(batch["segment_ids"]), np.asarray(batch["mlm_positions"]),
                           1)
  got = []
  for r in range(nll.shape[0]):
    for s in np.unique(seg[r][causal[r]]):
      got.append(float(nll[r][(seg[r] == s) & causal[r]].sum()))
  np.testing.assert_allclose(sorted(got), sorted(expected), rtol=1e-5, atol=1e-5)
