"""Prix-LM decoding: KV cache, CSR trie, jitted beam search vs references."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kmlm_jax.config import preset
from kmlm_jax.decoding import kv_cache
from kmlm_jax.decoding.beam_search import BeamSearch
from kmlm_jax.decoding.reference import (ReferenceSearch, dict_trie, exhaustive_ranking,
                                         exhaustive_scores)
from kmlm_jax.decoding.trie import Trie, TrieError, build_trie, build_trie_cached
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.models.masks import prefix_causal_mask

VOCAB, EOS = 300, 299
_NO_EXCLUDE = np.full((3, 1), -1)


def _model(flavour: str, seed: int = 0):
  # initializer_range 0.1 spreads the scores so that random models have no near-ties.
  config = preset("tiny" if flavour == "xlmr" else "tiny-bert", vocab_size=VOCAB,
                  max_position_embeddings=64, dropout_rate=0.0, attention_dropout_rate=0.0,
                  initializer_range=0.1)
  return Encoder(config, rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def models():
  return {"xlmr": _model("xlmr"), "bert": _model("bert", 1)}


def _names(seed: int, count: int, alphabet=range(5, 12), max_len: int = 4):
  """Distinct random names over a small alphabet (many shared prefixes)."""
  rng = np.random.default_rng(seed)
  alphabet = np.asarray(list(alphabet))
  names = set()
  while len(names) < count:
    names.add(tuple(rng.choice(alphabet, rng.integers(1, max_len + 1))))
  names = [list(map(int, n)) for n in sorted(names)]
  rng.shuffle(names)
  return names


def _prefixes(config, seed: int, lengths=(8, 5, 6)):
  rng = np.random.default_rng(seed)
  lengths = np.asarray(lengths)
  ids = rng.integers(5, VOCAB - 10, (lengths.shape[0], lengths.max()))
  ids[np.arange(ids.shape[1])[None] >= lengths[:, None]] = config.pad_token_id
  return ids.astype(np.int32), lengths.astype(np.int32)


# ---------------------------------------------------------------- KV cache

_encode = nnx.jit(kv_cache.encode_prefix, static_argnames=("max_decode_len", "num_rows"))
_decode = nnx.jit(kv_cache.decode_step)
_full = nnx.jit(lambda model, ids, segments, mask: model(ids, segment_ids=segments,
                                                         attention=mask).hidden)


def _bf16_model():
  config = preset("tiny", vocab_size=VOCAB, max_position_embeddings=64, dropout_rate=0.0,
                  attention_dropout_rate=0.0, initializer_range=0.1, dtype="bfloat16")
  return Encoder(config, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("flavour", ["xlmr", "bert", "xlmr-bf16"])
def test_kv_cache_equals_full_recompute(flavour, models):
  # bf16: both paths compute in bf16 (fp32 softmax / LayerNorm), so they agree
  # to bf16 rounding, not bit for bit.
  model = _bf16_model() if flavour == "xlmr-bf16" else models[flavour]
  atol = 5e-2 if flavour == "xlmr-bf16" else 1e-5
  config = model.config
  prefix, lengths = _prefixes(config, 0, (9, 4, 6))
  b, m, rows = 3, 5, 2
  objects = np.random.default_rng(1).integers(5, VOCAB, (b, rows, m)).astype(np.int32)
  cache, last = _encode(model, prefix, lengths, max_decode_len=m, num_rows=rows)
  hidden = [jnp.broadcast_to(last[:, None], (b, rows, config.hidden_size))]
  for step in range(m):
    cache, h = _decode(model, cache, objects[:, :, step], jnp.int32(step))
    hidden.append(h)
  hidden = np.stack([np.asarray(h) for h in hidden], axis=2)  # [B, R, M + 1, D]

  t = prefix.shape[1] + m
  for r in range(rows):
    ids = np.full((b, t), config.pad_token_id, np.int32)
    segments, in_prefix = np.zeros((b, t), np.int32), np.zeros((b, t), bool)
    for i, n in enumerate(lengths):
      ids[i, :n], ids[i, n:n + m] = prefix[i, :n], objects[i, r]
      segments[i, :n + m], in_prefix[i, :n] = 1, True
    mask = prefix_causal_mask(jnp.asarray(segments), jnp.asarray(in_prefix))
    full = np.asarray(_full(model, jnp.asarray(ids), jnp.asarray(segments), mask))
    for i, n in enumerate(lengths):
      np.testing.assert_allclose(hidden[i, r].astype(np.float32),
                                 full[i, n - 1:n + m].astype(np.float32), atol=atol, rtol=0)


def test_kv_cache_single_row_shapes_and_errors(models):
  model = models["xlmr"]
  prefix, lengths = _prefixes(model.config, 0)
  cache, last = _encode(model, prefix, lengths, max_decode_len=3)
  assert last.shape == (3, model.config.hidden_size) and cache.num_rows == 1
  cache, h = _decode(model, cache, jnp.array([5, 6, 7]), jnp.int32(0))
  assert h.shape == (3, model.config.hidden_size)
  with pytest.raises(ValueError, match="object slots"):
    kv_cache.decode_step(model, cache, jnp.array([5, 6, 7]), 3)
  with pytest.raises(ValueError, match="token_ids"):
    kv_cache.decode_step(model, cache, jnp.array([5, 6]), 1)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    kv_cache.encode_prefix(model, prefix, lengths, max_decode_len=60)
  with pytest.raises(ValueError, match="prefix_len"):
    kv_cache.encode_prefix(model, prefix, np.array([0, 3, 3]), max_decode_len=3)


# ---------------------------------------------------------------- trie


def _dict_children(node):
  return {t: _dict_children(c) for t, c in node.children.items()}, node.entity


def _csr_children(trie: Trie, state: int = 0):
  tokens, states = trie.children(state)
  assert (np.diff(tokens) > 0).all()  # sorted, unique
  return ({int(t): _csr_children(trie, int(s)) for t, s in zip(tokens, states)},
          int(trie.terminal_entity[state]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trie_equals_dict_trie(seed):
  rng = np.random.default_rng(seed)
  names = _names(seed, int(rng.integers(1, 120)), alphabet=range(int(rng.integers(2, 30))),
                 max_len=6)
  # Half of the names already carry their [EOS].
  names = [n + [EOS] if i % 2 else n for i, n in enumerate(names)]
  trie = build_trie(names, EOS)
  assert _csr_children(trie) == _dict_children(dict_trie(names, EOS))
  np.testing.assert_array_equal(trie.child_state, np.arange(1, trie.num_states))
  degrees = np.diff(trie.row_ptr)
  assert trie.max_branch == degrees.max() and trie.root_degree == degrees[0]
  assert trie.max_len == max(len(n) + (n[-1] != EOS) for n in names)
  for entity, state in enumerate(trie.entity_state):
    assert trie.terminal_entity[state] == entity
  parents = np.repeat(np.arange(trie.num_states), degrees)
  eos_edges = trie.child_token == EOS
  np.testing.assert_array_equal(trie.eos_entity[parents[eos_edges]],
                                trie.terminal_entity[trie.child_state[eos_edges]])
  assert (trie.eos_entity >= 0).sum() == len(names)


def test_trie_save_load_and_cache(tmp_path, monkeypatch):
  names = _names(3, 50)
  trie = build_trie_cached(names, EOS, tmp_path)
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].startswith("trie-") and files[0].endswith(".npz")
  import kmlm_jax.decoding.trie as trie_lib
  monkeypatch.setattr(trie_lib, "build_trie_flat", lambda *a, **k: pytest.fail("rebuilt"))
  again = build_trie_cached(names, EOS, tmp_path)
  for name in ("row_ptr", "child_token", "child_state", "terminal_entity", "eos_entity",
               "entity_state"):
    np.testing.assert_array_equal(getattr(again, name), getattr(trie, name))
  assert (again.eos_id, again.max_len) == (trie.eos_id, trie.max_len)
  monkeypatch.undo()
  build_trie_cached(names[:-1], EOS, tmp_path)  # other inputs, other file
  assert len(os.listdir(tmp_path)) == 2
  (tmp_path / "bad.npz").write_bytes(b"not a trie")
  with pytest.raises(Exception):
    Trie.load(tmp_path / "bad.npz")


def test_trie_errors():
  with pytest.raises(TrieError, match="entities 0 and 2 have the same name"):
    build_trie([[1, 2], [3], [1, 2, EOS]], EOS)
  merged = build_trie([[1, 2], [3], [1, 2, EOS]], EOS, duplicates="first")
  assert merged.dropped.tolist() == [2] and merged.terminal_entity.max() == 1
  with pytest.raises(TrieError, match="entity 1 has an empty name"):
    build_trie([[1], [EOS], [2]], EOS)
  with pytest.raises(TrieError, match="entity 1 has an empty name"):
    build_trie([[1], [], [2]], EOS)
  with pytest.raises(TrieError, match=r"entity 2 has \[EOS\]"):
    build_trie([[1], [2], [3, EOS, 4]], EOS)
  with pytest.raises(TrieError, match="entity 1 has 5 tokens with .EOS., more than "
                                      "max_decode_len=4"):
    build_trie([[1, 2], [1, 2, 3, 4], [5]], EOS, max_decode_len=4)
  with pytest.raises(TrieError, match="negative"):
    build_trie([[1, -2]], EOS)
  with pytest.raises(TrieError, match="no entity names"):
    build_trie([], EOS)


# ---------------------------------------------------------------- beam search


def test_beam_search_equals_exhaustive_when_k_covers_all(models):
  """K >= #entities: the search finishes every entity with its teacher-forced score."""
  model = models["xlmr"]
  names = _names(4, 40)
  trie = build_trie(names, EOS)
  prefix, lengths = _prefixes(model.config, 4)
  exclude = np.array([[-1, -1, -1], [3, 17, -1], [0, 1, 2]])
  search = BeamSearch(model, trie, num_beams=48, max_decode_len=6)
  plain = search(prefix, lengths, np.full_like(exclude, -1))
  filtered = search(prefix, lengths, exclude)
  for i, n in enumerate(lengths):
    scores = exhaustive_scores(model, prefix[i, :n], names, EOS)
    for result, skip in ((plain, ()), (filtered, exclude[i][exclude[i] >= 0])):
      entities, best = exhaustive_ranking(scores, 48, skip)
      np.testing.assert_array_equal(result.entities[i], entities)
      assert (result.entities[i] >= 0).sum() == len(names) - len(skip)
      np.testing.assert_allclose(result.scores[i], best, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("flavour,seed,beams", [("xlmr", 5, (2, 5)), ("bert", 6, (3,))])
def test_beam_search_equals_algorithm_1(flavour, seed, beams, models):
  model = models[flavour]
  names = _names(seed, 60, max_len=5)
  trie = build_trie(names, EOS)
  prefix, lengths = _prefixes(model.config, seed)
  exclude = np.array([[-1], [-1], [int(np.random.default_rng(seed).integers(60))]])
  for k in beams:
    result = BeamSearch(model, trie, num_beams=k, max_decode_len=6)(prefix, lengths, exclude)
    reference = ReferenceSearch(model, names, EOS, num_beams=k, length=16)
    for i, n in enumerate(lengths):
      entities, scores = reference(prefix[i, :n].tolist(), exclude[i][exclude[i] >= 0])
      np.testing.assert_array_equal(result.entities[i], entities)
      np.testing.assert_allclose(result.scores[i], scores, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_ties_are_broken_by_tokens_then_entity_id():
  """Tokens 7 and 8 share one embedding row, so names [8, 9] and [7, 9] tie exactly.

  The other names start with tokens made unlikely; shapes match the test above
  (B = 3, widths 8) so the K = 2 search reuses its compilation.
  """
  model = _model("xlmr", 2)
  word = model.embeddings.word[...]
  model.embeddings.word[...] = word.at[8].set(word[7])
  model.mlm_head.bias[...] = model.mlm_head.bias[...].at[10:15].set(-20.0)
  names = [[8, 9], [7, 9], [10, 11], [10, 5], [10, 6], [10, 12], [10, 13], [11, 5], [12, 5],
           [13, 5], [14, 5]]
  trie = build_trie(names, EOS)
  prefix, lengths = _prefixes(model.config, 7)
  scores = exhaustive_scores(model, prefix[0, :lengths[0]], names, EOS)
  assert scores[0] == scores[1] < scores[2:].min()
  # Result list: equal scores, smaller entity id first.
  two = BeamSearch(model, trie, num_beams=2, max_decode_len=6)(prefix, lengths, _NO_EXCLUDE)
  assert two.entities.tolist() == [[0, 1]] * 3 and (two.scores[:, 0] == two.scores[:, 1]).all()
  # One beam: the tied hypotheses [7] and [8] compete; the smaller token sequence survives,
  # so entity 1 ([7, 9]) is found and entity 0 never is.
  one = BeamSearch(model, trie, num_beams=1, max_decode_len=6)(prefix, lengths, _NO_EXCLUDE)
  reference = ReferenceSearch(model, names, EOS, num_beams=1, length=16)
  assert one.entities.tolist() == [[1]] * 3
  assert reference(prefix[0, :lengths[0]].tolist())[0].tolist() == [1]


def test_nothing_reachable_gives_padding(models):
  model = models["xlmr"]
  names = _names(8, 6)
  trie = build_trie(names, EOS)
  prefix, lengths = _prefixes(model.config, 8)
  exclude = np.tile(np.arange(6), (3, 1))
  exclude[1, :2] = -1  # query 1 can still reach entities 0 and 1
  result = BeamSearch(model, trie, num_beams=4, max_decode_len=6)(prefix, lengths, exclude)
  assert (result.entities[[0, 2]] == -1).all() and np.isinf(result.scores[[0, 2]]).all()
  assert sorted(result.entities[1, :2]) == [0, 1] and (result.entities[1, 2:] == -1).all()
  reference = ReferenceSearch(model, names, EOS, num_beams=4, length=16)
  entities, scores = reference(prefix[0, :lengths[0]].tolist(), range(6))
  assert (entities == -1).all() and np.isinf(scores).all()


def test_sharded_batch_equals_one_device(models):
  model = models["xlmr"]
  trie = build_trie(_names(8, 6), EOS)  # the trie and shapes of the test above
  prefix, lengths = _prefixes(model.config, 9)
  exclude = np.full((3, 6), -1)
  exclude[2, 0] = 3
  mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:2])
  one = BeamSearch(model, trie, num_beams=4, max_decode_len=6)(prefix, lengths, exclude)
  # B = 3 queries are padded to 4 for the 2-way batch split.
  two = BeamSearch(model, trie, num_beams=4, max_decode_len=6, mesh=mesh)(prefix, lengths,
                                                                         exclude)
  np.testing.assert_array_equal(one.entities, two.entities)
  np.testing.assert_allclose(one.scores, two.scores, atol=1e-6)
  assert 3 not in two.entities[2] and (one.entities >= 0).all()


def test_beam_search_bad_inputs(models):
  model = models["xlmr"]
  prefix, lengths = _prefixes(model.config, 0)
  trie = build_trie([[1, 2], [3]], EOS)
  with pytest.raises(ValueError, match="outside the model vocabulary"):
    BeamSearch(model, build_trie([[1, 400]], EOS), num_beams=2)
  with pytest.raises(ValueError, match="num_beams"):
    BeamSearch(model, trie, num_beams=0)
  with pytest.raises(ValueError, match="shorter than the longest name"):
    BeamSearch(model, trie, num_beams=2, max_decode_len=2)
  search = BeamSearch(model, trie, num_beams=2)
  with pytest.raises(ValueError, match="prefix_len"):
    search(prefix, np.array([0, 3, 3]))
  with pytest.raises(ValueError, match=r"prefix_ids must be \[B, Tp\]"):
    search(prefix[0], lengths)
  with pytest.raises(ValueError, match="exclude"):
    search(prefix, lengths, np.zeros((2, 1), int))
  with pytest.raises(ValueError, match="token ids"):
    search(prefix + 1000, lengths)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    BeamSearch(model, trie, num_beams=2, max_decode_len=63)(prefix, lengths)
