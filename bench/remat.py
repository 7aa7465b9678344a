"""Memory and step time of each remat policy, as ratios to `none`.

XLM-R base dimensions (width 768, 12 heads, MLP 3,072, the 250,002-piece
vocabulary) with 2 layers, T=128, 20 predictions per row, fp32, AdamW, on one
CPU device. Each policy runs in a fresh process: the train step is compiled
ahead of time (`kmlm_jax.training.dry_run.compile_step`), its
`memory_analysis()` gives the temporaries and arguments, then `--steps` steps
run after one warm-up step (the median is the step time) and the process's
peak RSS is read at the end. Prints a Markdown table.

  python bench/remat.py [--batch 32] [--steps 3] [--vocab-size 250002]

The last line is `key=value` pairs: `<policy>_memory_ratio` (temporaries +
arguments), `<policy>_temp_ratio`, `<policy>_rss_ratio` and
`<policy>_time_ratio` against `none`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("none", "minimal", "save_out_proj", "full")


def measure(policy: str, batch: int, steps: int, vocab_size: int) -> dict:
  """One policy in this process: compiled memory, median step seconds, peak RSS."""
  import resource
  import time

  import jax
  import numpy as np

  from kmlm_jax.config import DataConfig, ExperimentConfig, MeshConfig, TrainConfig, preset
  from kmlm_jax.training.data import SyntheticBatches
  from kmlm_jax.training.dry_run import compile_step, memory_per_device

  config = ExperimentConfig(
      "remat-bench", preset("xlmr-base", num_layers=2, vocab_size=vocab_size,
                            remat_policy=policy),
      DataConfig(mixture="synthetic", seq_length=128, max_predictions=20, batch_size=batch),
      TrainConfig(steps=1000, warmup_steps=10), MeshConfig(shape=(1, 1, 1)))
  trainer, compiled = compile_step(config, jax.devices()[:1])
  memory = memory_per_device(compiled)
  state = trainer.init_state()
  batches = SyntheticBatches(config.data, vocab_size)
  seconds = []
  for _ in range(steps + 1):
    batch = trainer.partitioner.put_batch(next(batches))
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics["loss"])
    seconds.append(time.perf_counter() - start)
  return {"policy": policy, "temps": memory["temps"], "arguments": memory["arguments"],
          "step_s": float(np.median(seconds[1:])), "loss": float(metrics["loss"]),
          "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _run(policy: str, args) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)  # one CPU device
  proc = subprocess.run([sys.executable, __file__, "--child", policy, "--batch", str(args.batch),
                         "--steps", str(args.steps), "--vocab-size", str(args.vocab_size)],
                        cwd=ROOT, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise SystemExit(f"{policy}: {proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--vocab-size", type=int, default=250002)
  parser.add_argument("--child", choices=POLICIES, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.child, args.batch, args.steps, args.vocab_size)))
    return
  rows = {p: _run(p, args) for p in POLICIES}
  base = rows["none"]
  mib = 1 << 20
  print(f"xlmr-base dims, 2 layers, batch {args.batch} x T=128, vocab {args.vocab_size}, "
        f"1 CPU device, median of {args.steps} steps\n")
  print("| policy | temps MiB | args MiB | peak RSS MiB | step s | memory ratio | temps ratio "
        "| RSS ratio | time ratio | loss |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  pairs = []
  for p, r in rows.items():
    ratios = {"memory": (r["temps"] + r["arguments"]) / (base["temps"] + base["arguments"]),
              "temp": r["temps"] / base["temps"], "rss": r["peak_rss"] / base["peak_rss"],
              "time": r["step_s"] / base["step_s"]}
    print(f"| {p} | {r['temps'] / mib:,.0f} | {r['arguments'] / mib:,.0f} | "
          f"{r['peak_rss'] / mib:,.0f} | {r['step_s']:.3f} | {ratios['memory']:.2f} | "
          f"{ratios['temp']:.2f} | {ratios['rss']:.2f} | {ratios['time']:.2f} | "
          f"{r['loss']:.4f} |")
    if p != "none":
      pairs += [f"{p}_{k}_ratio={v:.3f}" for k, v in ratios.items()]
  print()
  print(" ".join(pairs))


if __name__ == "__main__":
  main()
