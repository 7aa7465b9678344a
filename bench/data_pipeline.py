"""Input pipeline throughput per stream, against what a training step consumes.

For each seqio task (text, code-switched, parallel, reasoning) on the
embedded sample corpora: examples per second of wall time and per CPU
second (one core's worth: process CPU time, all threads), and packed rows
(T=128) per CPU second. Then one training step of the Flax encoder on the
same machine (B=8 rows, T=128, P=32; tiny and 2-layer base dimensions),
and the ratio of rows the pipeline makes per CPU second to rows the step
consumes per second. A ratio above 1 means one core of input keeps up with
that step.

  python bench/data_pipeline.py [--examples 3000]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import seqio

import tasks  # noqa: F401  (registers the tasks)
from kmlm_jax import sharding
from kmlm_jax.config import DEFAULT_RULES, MeshConfig, preset
from kmlm_jax.text import packing
from kmlm_jax.training.step import sharded_value_and_grad

LENGTHS = {"input_ids": 128, "targets": 128}
TASKS = ("cc100", "kmlm_knowledge_cs", "kmlm_knowledge_parallel", "kmlm_reasoning")
B, T, P = 8, 128, 32


def pipeline_rate(task: str, n: int) -> dict:
  ds = seqio.get_mixture_or_task(task).get_dataset(LENGTHS, split="train", shuffle=True, seed=0)
  it = ds.as_numpy_iterator()
  for _ in range(200):  # warm-up: shuffle buffers, tokenizer load
    next(it)
  wall, cpu = time.perf_counter(), time.process_time()
  examples = [next(it) for _ in range(n)]
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  stats = {}
  spec = packing.PackSpec(T, P, pad_id=1, position_offset=2, pad_position=1)
  t = time.process_time()
  rows = list(packing.pack(({"input_ids": e["input_ids"], "targets": e["targets"],
                             "loss_mask": e["loss_mask"].astype(bool), "stream": int(e["stream"])}
                            for e in examples), spec, stats))
  cpu += time.process_time() - t
  return dict(examples_per_s=n / wall, examples_per_cpu_s=n / cpu,
              rows_per_cpu_s=len(rows) / cpu, efficiency=packing.efficiency(stats, T))


def step_rows_per_s(name: str, **dims) -> float:
  config = preset("tiny", max_position_embeddings=T + 2, dropout_rate=0.0, **dims)
  from flax import nnx
  from kmlm_jax.models.encoder import Encoder
  model = Encoder(config, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  batch = dict(input_ids=rng.integers(4, config.vocab_size, (B, T)).astype(np.int32),
               segment_ids=np.ones((B, T), np.int32),
               mlm_positions=np.sort(rng.integers(0, T, (B, P))).astype(np.int32),
               mlm_targets=rng.integers(4, config.vocab_size, (B, P)).astype(np.int32),
               mlm_weights=np.ones((B, P), np.float32))
  mesh = sharding.make_mesh(MeshConfig(shape=(1, 1, 1)), devices=jax.devices()[:1])
  step = sharded_value_and_grad(model, mesh, DEFAULT_RULES, batch)
  gb = sharding.host_local_to_global(batch, mesh, DEFAULT_RULES)
  jax.block_until_ready(step(gb))
  times = []
  for _ in range(3):
    t = time.perf_counter()
    jax.block_until_ready(step(gb))
    times.append(time.perf_counter() - t)
  return B / float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--examples", type=int, default=3000)
  args = parser.parse_args()
  print("| task | examples/s (wall) | examples per CPU-s | packed rows per CPU-s | "
        "packing efficiency |")
  print("|---|---|---|---|---|")
  rates = {}
  for task in TASKS:
    r = pipeline_rate(task, args.examples)
    rates[task] = r
    print(f"| {task} | {r['examples_per_s']:,.0f} | {r['examples_per_cpu_s']:,.0f} | "
          f"{r['rows_per_cpu_s']:,.1f} | {r['efficiency']:.1%} |", flush=True)
  steps = {"tiny": step_rows_per_s("tiny", vocab_size=250002),
           "base-2layer": step_rows_per_s("base", vocab_size=250002, hidden_size=768,
                                          num_heads=12, intermediate_size=3072)}
  print("\n| train step (this CPU) | rows/s consumed | slowest stream's rows per CPU-s / step rows/s |")
  print("|---|---|---|")
  slowest = min(r["rows_per_cpu_s"] for r in rates.values())
  for name, rows in steps.items():
    print(f"| {name} (B={B}, T={T}) | {rows:,.1f} | {slowest / rows:.1f}x |")
  line = " ".join(f"{t}_examples_per_cpu_s={r['examples_per_cpu_s']:.0f}" for t, r in rates.items())
  print(line + " " + " ".join(f"ratio_vs_{n.replace('-', '_')}_step={slowest / v:.2f}"
                              for n, v in steps.items()))


if __name__ == "__main__":
  main()
