"""The validation split never enters training: `kg build`'s validation corpora, the
token cache's held-out text lines, and `make_validation_batches` over them."""

import collections
from pathlib import Path

import numpy as np
import pytest

from kmlm_jax.config import DataConfig
from kmlm_jax.data import cache, masking
from kmlm_jax.kg import build, evalsets, records
from kmlm_jax.kg.corpus_dir import CorpusDir
from kmlm_jax.kg.sample import KMLM_LANGUAGES, read_sample
from kmlm_jax.text.errors import CorpusError
from kmlm_jax.text.vocab import default_vocab_path
from kmlm_jax.training import data as data_lib

from tests.data.conftest import LANGS

KG_SOURCES = ["code_switched", "parallel", "reasoning", "triple", "link"]


def _config(root, **kw) -> DataConfig:
  base = dict(mixture="kmlm_mix", corpus_dir=str(root / "kg"), cache_dir=str(root / "cache"),
              vocab=str(root / "vocab" / "tokenizer.json"), seq_length=64, max_predictions=64,
              batch_size=8, input_shards=4, block_examples=64)
  return DataConfig(**{**base, **kw})


def _examples(opened: cache.TokenCache, split: str, names=None) -> set[tuple]:
  """The token sequences of every example of the split's sources."""
  return set(_examples_by_source(opened, split, names))


def _examples_by_source(opened: cache.TokenCache, split: str, names=None) -> dict:
  """Token sequence -> the sources of the split that hold it."""
  out = collections.defaultdict(set)
  for name, source in (opened.sources if split == cache.TRAIN else opened.validation).items():
    if names is None or name in names:
      data = source.gather(np.arange(source.num_examples))
      ends = np.cumsum(data["lengths"])
      for tokens in np.split(data["tokens"], ends[:-1]):
        out[tuple(tokens.tolist())].add(name)
  return out


def _homonym_links(opened: cache.TokenCache) -> set[tuple]:
  """Validation examples whose tokens a training example also has: only links of two
  entities with the same labels (the Djibouti city and country), whose sources differ."""
  held = _examples_by_source(opened, cache.VALIDATION)
  same = set(held) & _examples(opened, cache.TRAIN)
  assert all(held[e] == {"link"} for e in same) and len(same) <= 8, same
  return same


def _row_examples(rows: dict) -> list[tuple]:
  """The examples of packed rows, unmasked: each prediction's target put back (a
  causal target is the next token: its input is the example's own token)."""
  ids = rows["input_ids"].copy()
  for r in range(len(ids)):
    keep = (rows["mlm_weights"][r] > 0) & (rows["mlm_terms"][r] != masking.RULE_CAUSAL)
    ids[r, rows["mlm_positions"][r][keep]] = rows["mlm_targets"][r][keep]
  return [tuple(ids[r][rows["segment_ids"][r] == s].tolist()) for r in range(len(ids))
          for s in range(1, int(rows["segment_ids"][r].max()) + 1)]


# ---------------------------------------------------------------- text rule


def test_text_rule_depends_on_the_text_only():
  line = "Tout individu a droit à la vie, à la liberté et à la sûreté de sa personne.".encode()
  assert cache.is_validation_line(line, 0.5) == cache.is_validation_line(
      b"  " + line.replace(b" ", b" \t ") + b" ", 0.5)
  assert not cache.is_validation_line(line, 0.0) and cache.is_validation_line(line, 1.0)
  lines = [f"line {i}".encode() for i in range(4000)]
  held = sum(cache.is_validation_line(l, cache.TEXT_VALIDATION_FRACTION) for l in lines)
  assert 0.08 < held / len(lines) < 0.12


def test_cache_holds_the_held_out_lines_apart(small):
  root, spec = small
  meta = cache.read_meta(root / "cache")
  assert set(meta["validation"]) == set(meta["sources"])
  assert meta["text_validation_fraction"] == cache.TEXT_VALIDATION_FRACTION
  from kmlm_jax.text.segments import tokenize_text
  from kmlm_jax.text.vocab import load_vocab
  vocab = load_vocab(spec.vocab)
  opened = cache.TokenCache(root / "cache")
  for lang in LANGS:
    raw = Path(spec.text_pattern.format(lang=lang)).read_bytes().splitlines()
    held = [l for l in raw if cache.is_validation_line(l, spec.validation_fraction)]
    assert 0 < len(held) < len(raw) / 4
    name = f"text.{lang}"
    assert meta["validation"][name]["lines"] == len(held)
    assert meta["sources"][name]["lines"] + len(held) == len(raw)
    expected = [tuple(w) for l in held for w in tokenize_text(vocab, l.decode(), 64)]
    assert sorted(_examples(opened, cache.VALIDATION, [name])) == sorted(set(expected))
  # No held-out window is a training window (of any language).
  assert not _examples(opened, cache.VALIDATION, [f"text.{l}" for l in LANGS]) & _examples(
      opened, cache.TRAIN)


def test_knowledge_validation_comes_from_the_validation_shards(small):
  root, _ = small
  corpus = CorpusDir(root / "kg")
  meta = cache.read_meta(root / "cache")
  for stream in KG_SOURCES:
    samples = corpus.manifest["validation"]["streams"][stream]["samples"]
    assert samples > 0, stream
    per_sample = 2 if stream == "link" else 1
    entry = meta["validation"][stream]
    assert entry["lines"] == samples and entry["examples"] == per_sample * samples - sum(
        entry["skipped"].values())
    assert entry["inputs"] == sorted(str(p) for p in corpus.shards(stream, "validation"))
  # By tokens, only homonym links are also training examples (by source, none: see
  # test_whole_sample_validation_is_disjoint_from_training).
  _homonym_links(cache.TokenCache(root / "cache"))


# ---------------------------------------------------------------- batches


@pytest.mark.parametrize("mixture,terms", [
    ("kmlm_mix", {masking.RULE_TEXT, masking.RULE_KNOWLEDGE, masking.RULE_REASONING}),
    ("prixlm", {masking.RULE_CAUSAL})])
def test_validation_batches_are_fixed_and_held_out(small, mixture, terms):
  root, _ = small
  config = _config(root, mixture=mixture)
  first = data_lib.make_validation_batches(config, 300_000, 0, 1, 3)
  again = data_lib.make_validation_batches(config, 300_000, 0, 1, 3)
  assert len(first) == 3
  training = next(data_lib.make_batches(config, 300_000, 0, 1))
  for a, b in zip(first, again):
    assert set(a) == set(training)
    for k in a:
      assert a[k].shape == training[k].shape and a[k].dtype == training[k].dtype, k
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  seen = {int(t) for b in first for t in b["mlm_terms"][b["mlm_weights"] > 0]}
  assert seen == terms
  opened = cache.TokenCache(root / "cache")
  held, trained = _examples(opened, cache.VALIDATION), _examples(opened, cache.TRAIN)
  trained -= _homonym_links(opened)
  examples = [e for b in first for e in _row_examples(b)]
  assert examples and all(e in held and e not in trained for e in examples)


def test_validation_batches_split_over_processes(small):
  config = _config(small[0])
  whole = data_lib.make_validation_batches(config, 300_000, 0, 1, 2)
  parts = [data_lib.make_validation_batches(config, 300_000, p, 2, 2) for p in range(2)]
  for b, (x, y) in zip(whole, zip(*parts)):
    for k in b:
      np.testing.assert_array_equal(b[k], np.concatenate([x[k], y[k]]), err_msg=k)


def test_synthetic_validation_is_seed_plus_one():
  config = DataConfig(mixture="synthetic", seq_length=32, max_predictions=8, batch_size=4)
  got = data_lib.make_validation_batches(config, 1000, 0, 1, 2)
  it = data_lib.SyntheticBatches(DataConfig(**{**config.__dict__, "seed": 1}), 1000)
  for b in got:
    expected = next(it)
    for k in b:
      np.testing.assert_array_equal(b[k], expected[k])


def test_an_empty_validation_stream_is_an_error(small, tmp_path):
  root, spec = small
  kg = tmp_path / "kg"
  graph, stats, info = read_sample(LANGS, max_entities=150)
  options = build.BuildOptions(num_shards=1, max_triangles=20, max_diamonds=20,
                               evals=evalsets.EvalOptions(validation_fraction=0.0))
  build.build(graph, kg, options, read_stats=stats, read_info=info)
  config = _config(root, mixture="kmlm_knowledge_cs", corpus_dir=str(kg),
                   cache_dir=str(tmp_path / "cache"))
  with pytest.raises(CorpusError, match=r"validation split: .*code_switched.* no examples"):
    data_lib.make_validation_batches(config, 300_000, 0, 1, 1)


# ---------------------------------------------------------------- whole sample


def _shard_samples(corpus: CorpusDir, stream: str, split: str):
  import tensorflow as tf
  for path in corpus.shards(stream, split):
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
      yield records.from_example(raw)


@pytest.mark.slow
def test_whole_sample_validation_is_disjoint_from_training(tmp_path):
  """Every validation sample of the embedded sample (every stream, every language)
  against every training sample, by source: the pair of each triple, the triples of
  each cycle, the (language, entity) of each link; and every held-out text line of
  the KMLM languages against every training line."""
  corpus = CorpusDir.sample()
  graph = corpus.graph()
  manifest = corpus.manifest
  keys = evalsets.pair_keys(graph).tolist()
  pairs = lambda rows: {keys[r] for r in rows}
  train_pairs, train_cycles, train_links = set(), set(), set()
  for stream in build.STREAMS:
    count = 0
    for s in _shard_samples(corpus, stream, build.TRAIN):
      count += 1
      train_pairs |= pairs(s.triple_ids)
      if s.cycle:
        train_cycles.add(frozenset(s.triple_ids))
      if stream == "link":
        train_links.add((s.lang, s.item_ids[0]))
    assert count == manifest["streams"][stream]["samples"]
  counts = collections.Counter()
  for stream in build.STREAMS:
    for s in _shard_samples(corpus, stream, build.VALIDATION):
      counts[stream] += 1
      if stream == "link":
        assert (s.lang, s.item_ids[0]) not in train_links
      elif s.cycle:
        assert frozenset(s.triple_ids) not in train_cycles
        assert pairs(s.triple_ids) - train_pairs  # an edge on a validation pair
      else:
        assert not pairs(s.triple_ids) & train_pairs, s
  assert counts == {s: e["samples"] for s, e in manifest["validation"]["streams"].items()}
  assert min(counts.values()) > 100
  # Text: the token sequences of every held-out window against every training window.
  spec = cache.CacheSpec(vocab=default_vocab_path(), seq_length=128,
                         text_pattern=data_lib.udhr_pattern(), languages=KMLM_LANGUAGES)
  cache.build(tmp_path / "cache", spec, [f"text.{l}" for l in KMLM_LANGUAGES], progress=False)
  opened = cache.TokenCache(tmp_path / "cache")
  held = _examples(opened, cache.VALIDATION)
  assert all(opened.source(f"text.{l}", cache.VALIDATION).num_examples for l in KMLM_LANGUAGES)
  assert len(held) > 10 and not held & _examples(opened, cache.TRAIN)
