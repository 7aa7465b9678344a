"""seqio tasks end to end: fresh-process import, packing exactness and efficiency, bad input."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf
from flax import nnx

from kmlm_jax.config import preset
from kmlm_jax.kg import build
from kmlm_jax.kg.sample import read_sample
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.text import packing, pipeline

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
LENGTHS = {"input_ids": 128, "targets": 128}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  graph, stats, info = read_sample()
  out = tmp_path_factory.mktemp("corpus") / "sample"
  build.build(graph, out, build.BuildOptions(num_shards=2), read_stats=stats, read_info=info)
  return out


@pytest.fixture(scope="module")
def registered(corpus):
  import tasks
  tasks.register(corpus_dir=str(corpus))
  yield
  tasks.register()


def test_fresh_process_gets_kmlm_mix_batches(corpus):
  code = """
import seqio, tasks
from kmlm_jax.text.pipeline import KMLMFeatureConverter
ds = seqio.get_mixture_or_task("kmlm_mix").get_dataset(
    {"input_ids": 128, "targets": 128}, split="train", shuffle=True, seed=1)
ex = next(ds.as_numpy_iterator())
assert {"input_ids", "targets", "loss_mask", "stream"} <= set(ex)
ds = seqio.get_dataset("kmlm_mix", {"input_ids": 128, "targets": 128}, dataset_split="train",
                       shuffle=True, seed=1, feature_converter=KMLMFeatureConverter())
b = next(ds.batch(4).as_numpy_iterator())
print({k: list(v.shape) for k, v in b.items()})
print(sorted(set(b["mlm_streams"][b["mlm_weights"] > 0].tolist())))
"""
  env = {**os.environ, "KMLM_CORPUS_DIR": str(corpus)}
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                        env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  shapes = eval(proc.stdout.strip().splitlines()[-2])
  assert shapes == {"input_ids": [4, 128], "segment_ids": [4, 128], "positions": [4, 128],
                    "prefix_mask": [4, 128], "mlm_positions": [4, 32], "mlm_targets": [4, 32], "mlm_weights": [4, 32],
                    "mlm_streams": [4, 32]}


def _examples(task, n, seed=0):
  ds = seqio.get_mixture_or_task(task).get_dataset(LENGTHS, split="train", shuffle=True,
                                                   seed=seed)
  return [{"input_ids": ex["input_ids"], "targets": ex["targets"],
           "loss_mask": ex["loss_mask"].astype(bool), "stream": int(ex["stream"])}
          for ex in ds.take(n).as_numpy_iterator()]


def test_masking_is_replayable_from_the_seed(registered):
  a, b = _examples("kmlm_knowledge_cs", 50, seed=3), _examples("kmlm_knowledge_cs", 50, seed=3)
  c = _examples("kmlm_knowledge_cs", 50, seed=4)
  same = lambda x, y: all(np.array_equal(p["input_ids"], q["input_ids"]) for p, q in zip(x, y))
  assert same(a, b) and not same(a, c)


def test_packing_efficiency_per_stream(registered):
  spec = packing.PackSpec(128, 32, pad_id=1, position_offset=2, pad_position=1)
  print()
  for task, floor in (("kmlm_knowledge_cs", 0.90), ("kmlm_knowledge_parallel", 0.90),
                      ("kmlm_reasoning", 0.5), ("cc100", 0.5)):
    stats = {}
    rows = list(packing.pack(_examples(task, 600), spec, stats))
    eff = packing.efficiency(stats, 128)
    print(f"packing efficiency {task}: {eff:.1%} real tokens "
          f"({stats['examples']} examples in {len(rows)} rows)")
    assert eff >= floor, (task, eff)


def _per_example_losses(model, rows, owners):
  """Sum of NLL of each example's predictions ({example: loss})."""
  batch = {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in packing.ROW_KEYS}
  out = model(batch["input_ids"], segment_ids=batch["segment_ids"],
              positions=batch["positions"])
  logits = model.mlm_logits(out.hidden, batch["mlm_positions"])
  logp = jax.nn.log_softmax(logits, -1)
  nll = -jnp.take_along_axis(logp, batch["mlm_targets"][..., None], -1)[..., 0]
  nll = np.asarray(nll * batch["mlm_weights"])
  losses = {}
  for r, owner in enumerate(owners):
    for p, ex in enumerate(owner):
      if ex >= 0:
        losses[ex] = losses.get(ex, 0.0) + float(nll[r, p])
  return losses


def _owners(rows):
  """Which example each prediction of each row belongs to (rows in pack order)."""
  owners, ex = [], 0
  for row in rows:
    counts = np.bincount(row["segment_ids"][row["mlm_positions"][row["mlm_weights"] > 0]],
                         minlength=row["segment_ids"].max() + 1)[1:]
    first = ex
    owner = np.full(len(row["mlm_weights"]), -1)
    owner[:int(row["mlm_weights"].sum())] = np.repeat(np.arange(first, first + len(counts)),
                                                      counts)
    ex += int((np.unique(row["segment_ids"]) > 0).sum())
    owners.append(owner)
  return owners


def test_packed_equals_unpacked_per_example_loss():
  rng = np.random.default_rng(0)
  examples = []
  for i in range(40):
    n = int(rng.integers(6, 40))
    ids = rng.integers(4, 1000, n).astype(np.int32)
    loss = rng.random(n) < 0.25
    loss[1] = True
    examples.append({"input_ids": ids, "targets": ids, "loss_mask": loss, "stream": i % 3})
  config = preset("tiny", vocab_size=1000, max_position_embeddings=130, dropout_rate=0.0)
  model = Encoder(config, rngs=nnx.Rngs(0))
  base = dict(length=128, max_predictions=32, pad_id=1, position_offset=2, pad_position=1)
  packed = list(packing.pack(examples, packing.PackSpec(**base, open_rows=1)))
  alone = list(packing.pack(examples, packing.PackSpec(**base, pack=False)))
  assert len(packed) < len(alone) == len(examples)
  a = _per_example_losses(model, packed, _owners(packed))
  b = _per_example_losses(model, alone, _owners(alone))
  assert sorted(a) == sorted(b) == list(range(len(examples)))
  for ex in a:
    assert abs(a[ex] - b[ex]) <= 1e-5 * max(1.0, abs(b[ex])), (ex, a[ex], b[ex])


def test_first_fit_rows_respect_both_budgets():
  rng = np.random.default_rng(1)
  examples = [{"input_ids": np.arange(n, dtype=np.int32), "targets": np.arange(n, dtype=np.int32),
               "loss_mask": np.arange(n) < k, "stream": 1}
              for n, k in zip(rng.integers(5, 60, 300), rng.integers(0, 12, 300))]
  stats = {}
  rows = list(packing.pack(examples, packing.PackSpec(128, 20, 1, 2, 1), stats))
  assert stats["examples"] == 300 and stats["tokens"] == sum(len(e["input_ids"]) for e in examples)
  assert sum(int((r["segment_ids"] > 0).sum()) for r in rows) == stats["tokens"]
  for r in rows:
    assert r["mlm_weights"].sum() <= 20 and (r["segment_ids"] > 0).sum() <= 128
    # Positions restart at 2 in each segment.
    starts = np.flatnonzero(np.diff(np.concatenate([[0], r["segment_ids"]])) != 0)
    assert all(r["positions"][s] == 2 for s in starts if r["segment_ids"][s] > 0)


# ---------------------------------------------------------------- bad input


def _first(task):
  ds = seqio.get_mixture_or_task(task).get_dataset(LENGTHS, split="train", shuffle=False)
  return next(ds.as_numpy_iterator())


def test_missing_corpus_directory(tmp_path):
  import tasks
  try:
    tasks.register(corpus_dir=str(tmp_path / "nowhere"))
    with pytest.raises(pipeline.CorpusError, match="nowhere.*no manifest.json"):
      _first("kmlm_reasoning")
  finally:
    tasks.register()


def test_empty_and_non_utf8_text_files(tmp_path):
  import tasks
  (tmp_path / "en.txt").write_bytes(b"")
  (tmp_path / "fr.txt").write_bytes("Bonjour le monde.\n".encode() + b"caf\xe9 noir\n")
  try:
    tasks.register(text_pattern=str(tmp_path / "{lang}.txt"), languages=("en", "fr"))
    with pytest.raises(pipeline.CorpusError, match="empty"):
      _first("cc100_en")
    with pytest.raises(tf.errors.OpError, match=r"fr.txt:2: not valid UTF-8"):
      ds = seqio.get_mixture_or_task("cc100_fr").get_dataset(LENGTHS, split="train",
                                                             shuffle=False, num_epochs=1)
      list(ds.as_numpy_iterator())
  finally:
    tasks.register()


def test_non_utf8_lines_can_be_counted_and_skipped(tmp_path):
  pipeline.SKIPPED.clear()
  (tmp_path / "fr.txt").write_bytes("Bonjour le monde.\n".encode() + b"caf\xe9 noir\n")
  from kmlm_jax.text.vocab import default_vocab_path
  fn = pipeline.tokenize_and_mask_text("t", default_vocab_path(), 128, skip_bad_lines=True)
  source = pipeline.NumberedTextLineDataSource({"train": str(tmp_path / "fr.txt")})
  with seqio.utils.map_seed_manager(0):
    ds = fn(source.get_dataset("train", shuffle=False))
  rows = list(ds.as_numpy_iterator())
  assert len(rows) == 1 and pipeline.SKIPPED[("t", "non_utf8_line")] == 1


def test_examples_longer_than_the_sequence_are_counted(registered):
  pipeline.SKIPPED.clear()
  ds = seqio.get_mixture_or_task("kmlm_reasoning").get_dataset(
      {"input_ids": 24, "targets": 24}, split="train", shuffle=False, num_epochs=1)
  kept = sum(1 for _ in ds.take(200).as_numpy_iterator())
  assert kept > 0 or pipeline.SKIPPED[("kmlm_reasoning", "longer_than_sequence_length")] > 0
  assert pipeline.SKIPPED[("kmlm_reasoning", "longer_than_sequence_length")] > 0
