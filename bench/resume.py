"""Resume cost against the input position: seconds from process start to the first new step.

A tiny model (2 layers, width 64, the full 250,002-piece XLM-R vocabulary)
trains one step of KMLM-Mix on the embedded sample (batch 8, T=128) and
checkpoints. The checkpoint's input state is then set to the state of an
input position of 0, 10,000 and 1,000,000 batches (each shard's block index
scaled from the rows per block this run measured: resuming reads nothing but
that state, so how the position was reached does not matter), and
`kmlm-jax train --resume` runs one more step in a fresh process for each.
The figure is `seconds_to_first_step` of the run's summary.json (process
start to the first new step done: imports, restore, input, compile, step).

  python bench/resume.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kmlm_jax.training import checkpointing

ROOT = Path(__file__).resolve().parents[1]
CONFIG = '''
from kmlm_jax.config import *
def get_config():
  return ExperimentConfig("resume-bench", preset("tiny", vocab_size=250002, hidden_size=64,
      num_heads=4, intermediate_size=256, num_layers=2, max_position_embeddings=130),
      DataConfig(mixture="kmlm_mix", seq_length=128, max_predictions=20, batch_size=8),
      TrainConfig(steps=1, warmup_steps=1, checkpoint_every=1, log_every=1,
                  async_checkpointing=False), MeshConfig(shape=(1, 1, 1)))
'''
POSITIONS = (0, 10_000, 1_000_000)


def _train(config: Path, workdir: Path, *extra: str) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", "kmlm_jax.cli", "train", "--config", str(config),
                         "--workdir", str(workdir), *extra], cwd=ROOT, env=env,
                        capture_output=True, text=True)
  if proc.returncode:
    raise SystemExit(proc.stderr[-3000:])
  return json.loads((workdir / "summary.json").read_text())


def _meta_file(workdir: Path) -> Path:
  return workdir / "checkpoints" / "1" / "meta" / "metadata"


def main() -> None:
  from kmlm_jax.config import DataConfig
  from kmlm_jax.data.input import make_block
  from kmlm_jax.training.data import prepare_input
  work = Path(tempfile.mkdtemp(prefix="kmlm-resume-"))
  config = work / "config.py"
  config.write_text(CONFIG)
  base = work / "base"
  _train(config, base)  # also builds the token cache if missing
  spec = prepare_input(DataConfig(mixture="kmlm_mix", max_predictions=20, batch_size=8),
                       progress=False)
  rows_per_block = sum(len(make_block(spec, s, 0)[0]["input_ids"])
                       for s in range(spec.num_shards)) / spec.num_shards
  print("| input position (batches) | input state (block index per shard) | "
        "seconds to the first new step |")
  print("|---|---|---|")
  seconds = {}
  for position in POSITIONS:
    run = work / f"at{position}"
    shutil.copytree(base, run)
    meta_path = _meta_file(run)
    meta = json.loads(meta_path.read_text())
    block = int(position * spec.rows_per_shard / rows_per_block)
    meta["input"]["blocks"] = [[block, 0]] * spec.num_shards
    checkpointing.replace_meta(meta_path.parents[1], meta)  # keeps the meta checksum right
    summary = _train(config, run, "--resume", "--allow-schedule-change", "train.steps=2")
    seconds[position] = summary["seconds_to_first_step"]
    print(f"| {position:,} | {block:,} | {seconds[position]:.1f} |", flush=True)
  shutil.rmtree(work, ignore_errors=True)
  print(f"\n(rows per block measured: {rows_per_block:.0f}; {spec.num_shards} input shards of "
        f"{spec.rows_per_shard} row(s) per step)")
  print(f"resume_s_at_0={seconds[0]:.2f} resume_s_at_10k={seconds[10_000]:.2f} "
        f"resume_s_at_1m={seconds[1_000_000]:.2f}")


if __name__ == "__main__":
  main()
