"""Converting random xlmr-large weights: seconds and peak memory.

Writes a random `XLMRobertaForMaskedLM`-layout safetensors directory of the
xlmr-large preset (560M parameters, 2.24 GB fp32) in one child process, then
times `kmlm-jax convert --from-hf` (no --verify) in another and reads its
peak RSS. Target: peak RSS at most 2.5x the fp32 model size.

  python bench/convert_large.py [--preset xlmr-large] [--workdir /tmp/kmlm-bench]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

MAKE = """
import sys, numpy as np
from pathlib import Path
from kmlm_jax.config import preset
from kmlm_jax.convert import hf
from kmlm_jax.model_checkpoint import abstract_params
import jax
config = preset(sys.argv[1])
rng = np.random.default_rng(0)
params = jax.tree.map(lambda a: rng.standard_normal(a.shape, dtype=np.float32) * 0.02,
                      abstract_params(config))
hf.write_hf_dir(Path(sys.argv[2]), config, params)
"""


# Peak RSS is read from VmHWM, which belongs to this process's address space
# (ru_maxrss would carry over the parent's high-water mark through exec).
CONVERT = """
import sys
from kmlm_jax.cli import main
code = main(["convert", "--from-hf", sys.argv[1], "--to", sys.argv[2]])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print("peak_kib", hwm.split()[1])
sys.exit(code)
"""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--preset", default="xlmr-large")
  parser.add_argument("--workdir", default="/tmp/kmlm-bench-convert")
  args = parser.parse_args()
  from kmlm_jax.config import preset
  work = Path(args.workdir)
  shutil.rmtree(work, ignore_errors=True)
  work.mkdir(parents=True)
  model_gb = preset(args.preset).num_params() * 4 / 1e9

  subprocess.run([sys.executable, "-c", MAKE, args.preset, str(work / "hf")], check=True)
  t = time.perf_counter()
  proc = subprocess.run([sys.executable, "-c", CONVERT, str(work / "hf"), str(work / "ckpt")],
                        check=True, capture_output=True, text=True)
  seconds = time.perf_counter() - t  # includes interpreter and JAX start-up
  peak_kib = int(proc.stdout.split("peak_kib")[-1])
  peak_gb = peak_kib * 1024 / 1e9
  print(f"| {args.preset} | {model_gb:.2f} GB | {seconds:.1f} s | {peak_gb:.2f} GB | "
        f"{peak_gb / model_gb:.2f}x |")
  shutil.rmtree(work, ignore_errors=True)
  print(f"preset={args.preset} model_gb={model_gb:.2f} convert_seconds={seconds:.1f} "
        f"peak_rss_gb={peak_gb:.2f} peak_over_model={peak_gb / model_gb:.2f}")


if __name__ == "__main__":
  main()
