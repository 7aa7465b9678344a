"""Host-local batches of packed rows from a seqio mixture, with a replayable position.

Each host reads its own share of the files (`seqio.ShardInfo(process_index,
process_count)`) and makes `batch_size / process_count` rows per step. The
pipeline is deterministic for a given seed, so the input position of a
checkpoint is simply the number of batches consumed: a resumed run skips
that many batches and continues with exactly the batches the interrupted run
would have seen.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from kmlm_jax.config import DataConfig


def register_tasks(config: DataConfig) -> None:
  """Registers the seqio tasks with this config's data locations and rates."""
  import tasks
  tasks.register(corpus_dir=config.corpus_dir, text_pattern=config.text_pattern,
                 vocab_path=config.vocab,
                 rates=tasks.MixtureRates(config.rate_mlm, config.rate_knowledge,
                                          config.rate_reasoning),
                 max_length=config.seq_length)


def dataset(config: DataConfig, shard_index: int = 0, num_shards: int = 1, seed: int | None = None,
            stats: dict | None = None):
  """tf.data.Dataset of host batches (dicts of [b, T] / [b, P] arrays), repeating."""
  import seqio

  from kmlm_jax.text.pipeline import KMLMFeatureConverter
  register_tasks(config)
  if config.batch_size % num_shards:
    raise ValueError(f"data.batch_size={config.batch_size} is not divisible by {num_shards} hosts")
  converter = KMLMFeatureConverter(config.vocab, config.max_predictions, pack=config.pack,
                                   stats=stats)
  ds = seqio.get_dataset(
      config.mixture, {"input_ids": config.seq_length, "targets": config.seq_length},
      dataset_split="train", shuffle=True, num_epochs=None,
      seed=config.seed if seed is None else seed,
      shard_info=seqio.ShardInfo(shard_index, num_shards), feature_converter=converter)
  return ds.batch(config.batch_size // num_shards, drop_remainder=True)


class BatchIterator:
  """Numpy host batches; `position` counts the batches handed out so far."""

  def __init__(self, config: DataConfig, shard_index: int = 0, num_shards: int = 1,
               start: int = 0, seed: int | None = None):
    self.stats: dict = {}
    self._it: Iterator = dataset(config, shard_index, num_shards, seed,
                                 self.stats).as_numpy_iterator()
    self.position = 0
    for _ in range(start):
      next(self._it)
      self.position += 1

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._it)
    self.position += 1
    return batch


class SyntheticBatches:
  """Random packed rows, a deterministic function of (seed, position), for
  benchmarks and tests without an input pipeline (`data.mixture="synthetic"`).

  Rows hold 1-3 examples; about 15% of tokens carry loss, spread over the
  three streams. Ids are drawn from [5, vocab_size).
  """

  def __init__(self, config: DataConfig, vocab_size: int, shard_index: int = 0,
               num_shards: int = 1, start: int = 0):
    self.config, self.vocab_size = config, vocab_size
    self.shard_index, self.rows = shard_index, config.batch_size // num_shards
    self.position = start

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    from kmlm_jax.text import packing
    c = self.config
    rng = np.random.default_rng([c.seed, self.position, self.shard_index])
    spec = packing.PackSpec(c.seq_length, c.max_predictions, pad_id=1, position_offset=2,
                            pad_position=1, open_rows=1)
    packer = packing.Packer(spec)
    rows = []
    while len(rows) < self.rows:
      n = int(rng.integers(8, c.seq_length // 2))
      ids = rng.integers(5, self.vocab_size, n).astype(np.int32)
      rows += packer.add({"input_ids": ids, "targets": ids, "loss_mask": rng.random(n) < 0.15,
                          "stream": int(rng.integers(0, 3))})
    self.position += 1
    return {k: np.stack([r[k] for r in rows[:self.rows]]) for k in packing.ROW_KEYS}


def make_batches(config: DataConfig, vocab_size: int, shard_index: int, num_shards: int,
                 start: int, seed: int | None = None):
  """The configured batch source, positioned at `start` batches."""
  if config.mixture == "synthetic":
    if seed is not None:
      import dataclasses
      config = dataclasses.replace(config, seed=seed)
    return SyntheticBatches(config, vocab_size, shard_index, num_shards, start)
  return BatchIterator(config, shard_index, num_shards, start, seed)
