"""Shared fixtures of the data tests: one small real-format corpus and its token cache."""

from pathlib import Path

import pytest

from kmlm_jax.data import cache
from kmlm_jax.kg import build
from kmlm_jax.kg.sample import read_sample
from kmlm_jax.text import prixlm
from kmlm_jax.text.vocab import add_tokens_to_tokenizer_json, default_vocab_path
from kmlm_jax.training import data as data_lib

LANGS = ("en", "fr")
SOURCES = ["text.en", "text.fr", "code_switched", "parallel", "reasoning", "triple", "link"]


@pytest.fixture(scope="session")
def small(tmp_path_factory):
  """A small real-format corpus (en, fr), a Prix-LM vocabulary and its token cache
  (every source, both splits): (root, cache spec)."""
  root = tmp_path_factory.mktemp("small")
  graph, stats, info = read_sample(LANGS)
  build.build(graph, root / "kg", build.BuildOptions(num_shards=2, max_triangles=150,
                                                     max_diamonds=150),
              read_stats=stats, read_info=info)
  (root / "vocab").mkdir()
  add_tokens_to_tokenizer_json(default_vocab_path(), prixlm.added_tokens(LANGS),
                               root / "vocab" / "tokenizer.json")
  udhr = Path(data_lib.udhr_pattern()).parent
  spec = cache.CacheSpec(vocab=str(root / "vocab" / "tokenizer.json"), seq_length=64,
                         corpus_dir=str(root / "kg"), text_pattern=str(udhr / "{lang}.txt"),
                         languages=LANGS)
  cache.build(root / "cache", spec, SOURCES, progress=False)
  return root, spec
