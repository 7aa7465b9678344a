"""The seqio registrations (see the package docstring)."""

from __future__ import annotations

import functools

import numpy as np

import kmlm_jax  # noqa: F401, I001  (first: quiets TensorFlow's CUDA probes, which seqio imports)
import seqio

from kmlm_jax.config import DataConfig
from kmlm_jax.data import cache, mixtures
from kmlm_jax.training.data import cache_spec, default_cache_dir

TASK_OF_SOURCE = {"code_switched": "kmlm_knowledge_cs", "parallel": "kmlm_knowledge_parallel",
                  "reasoning": "kmlm_reasoning", "triple": "prixlm_triples",
                  "link": "prixlm_links"}
MIXTURES = ("cc100", "kmlm_cs", "kmlm_parallel", "kmlm_mix", "prixlm")
FEATURES = ("input_ids", "roles", "mentions", "sentences", "aux")  # int32, `aux` a scalar


def task_name(source: str) -> str:
  return f"cc100_{source[5:]}" if source.startswith("text.") else TASK_OF_SOURCE[source]


class TokenCacheSource(seqio.DataSource):
  """One source of a token cache as a seqio DataSource (split "train")."""

  def __init__(self, cache_dir: str, source: str):
    self.cache_dir, self.source = cache_dir, source
    super().__init__(splits=("train",), num_input_examples=None)

  def _source(self) -> cache.Source:
    return cache.TokenCache(self.cache_dir).source(self.source)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str):
    return [f"{self.cache_dir}/{self.source}"]

  def num_input_examples(self, split: str) -> int:
    return self._source().num_examples

  def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **_):
    import tensorflow as tf
    source = self._source()
    ids = np.arange(source.num_examples)
    if shard_info:
      ids = ids[shard_info.index::shard_info.num_shards]
    if shuffle:
      ids = np.random.default_rng(seed).permutation(ids)

    def examples():
      for i in ids:
        ex = source.gather(np.asarray([i]))
        yield {"input_ids": ex["tokens"], "roles": ex["roles"].astype(np.int32),
               "mentions": ex["mentions"].astype(np.int32),
               "sentences": ex["sentences"].astype(np.int32), "aux": np.int32(ex["aux"][0])}

    spec = {k: tf.TensorSpec([] if k == "aux" else [None], tf.int32) for k in FEATURES}
    return tf.data.Dataset.from_generator(examples, output_signature=spec)


def register(config: DataConfig = DataConfig()) -> None:
  """(Re-)registers every task and mixture for the token cache `config` reads."""
  spec, _ = cache_spec(config)
  cache_dir = config.cache_dir or str(default_cache_dir(spec))
  flags = seqio.PassThroughVocabulary(1 << 16)
  features = {k: seqio.Feature(flags, add_eos=False, dtype="int32", rank=0 if k == "aux" else 1)
              for k in FEATURES}
  languages = spec.languages
  for source in [f"text.{l}" for l in languages] + list(TASK_OF_SOURCE):
    seqio.TaskRegistry.remove(task_name(source))
    seqio.TaskRegistry.add(task_name(source), source=TokenCacheSource(cache_dir, source),
                           output_features=features)
  rates = mixtures.MixtureRates(config.rate_mlm, config.rate_knowledge, config.rate_reasoning)

  def rate(mixture, task):  # evaluated when the mixture is read, from the cache's counts
    opened = cache.TokenCache(cache_dir)
    needed = mixtures.sources_needed(mixture, languages)
    counts = {s: opened.source(s).num_examples for s in needed}
    weights = mixtures.source_weights(mixture, rates, counts, languages,
                                      config.language_temperature)
    return weights[next(s for s in needed if task_name(s) == task.name)]

  for mixture in MIXTURES:
    members = [task_name(s) for s in mixtures.sources_needed(mixture, languages)]
    seqio.MixtureRegistry.remove(mixture)
    seqio.MixtureRegistry.add(mixture, [(t, functools.partial(rate, mixture)) for t in members])

