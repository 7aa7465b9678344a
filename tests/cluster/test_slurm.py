"""The SLURM launch on a real one-machine cluster (`tests/cluster/slurm_up.sh`, run by
`make test-cluster`): 2 tasks joined by jax.distributed train bit-identically to one
process, and a job signalled mid-run saves, requeues itself and finishes bit-identically."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from flax import traverse_util

from kmlm_jax import model_checkpoint as mc

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "tests/cluster/tiny_config.py"
STEPS = 10

pytestmark = pytest.mark.skipif(shutil.which("sbatch") is None or subprocess.run(
    ["sinfo", "-h"], capture_output=True).returncode != 0,
    reason="no SLURM cluster: run tests/cluster/slurm_up.sh (make test-cluster does)")


def _env() -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env['PATH']}"
  env["PYTHONPATH"] = str(ROOT)  # the tasks import this checkout, like the test
  env["KMLM_CLUSTER_STEPS"] = str(STEPS)
  env["KMLM_CPU_DEVICES"] = "1"  # the launch's default, said here for the reference below
  return env


def _submit(workdir: Path, log: Path) -> str:
  out = subprocess.run(["sbatch", "--parsable", "-o", str(log),
                        "launch/slurm_cpu.sbatch", CONFIG, str(workdir)],
                       cwd=ROOT, env=_env(), check=True, capture_output=True, text=True)
  return out.stdout.strip().split(";")[0]


def _state(job: str) -> str:
  out = subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "State"], capture_output=True,
                       text=True).stdout.split()
  return out[-1] if out else "PENDING"


def _wait(job: str, log: Path, timeout: float = 900) -> str:
  end = time.time() + timeout
  while time.time() < end:
    queued = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True)
    if not queued.stdout.strip():
      return _state(job)
    time.sleep(2)
  subprocess.run(["scancel", job])
  pytest.fail(f"job {job} still running after {timeout} s; log:\n{log.read_text()[-3000:]}")


def _params(workdir: Path) -> dict:
  _, params, _ = mc.load_model_checkpoint(workdir / "model")
  return traverse_util.flatten_dict(params, sep=".")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The same config in one process of 2 CPU devices."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  env = {**_env(), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  done = subprocess.run(["kmlm-jax", "train", "--config", CONFIG, "--workdir", str(workdir)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  return _params(workdir)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """(params, job log) of the config as a 2-task SLURM job, never signalled."""
  tmp = tmp_path_factory.mktemp("uninterrupted")
  log = tmp / "job.txt"
  job = _submit(tmp / "run", log)
  assert _wait(job, log) == "COMPLETED", log.read_text()[-3000:]
  return _params(tmp / "run"), log.read_text()


def test_two_tasks_train_like_one_process(uninterrupted, reference):
  params, text = uninterrupted
  assert "2 tasks, fresh start" in text and text.count(f"status=completed steps={STEPS}") == 2
  assert params.keys() == reference.keys()
  for name in params:  # every reduction sums 2 terms: no order to differ in
    np.testing.assert_array_equal(params[name], reference[name], err_msg=name)


@pytest.mark.parametrize("how", ["scancel --signal=TERM", "scontrol requeue"])
def test_signalled_job_requeues_itself_and_resumes_exactly(tmp_path, uninterrupted, how):
  log, workdir = tmp_path / "job.txt", tmp_path / "run"
  job = _submit(workdir, log)
  end = time.time() + 600
  while not (workdir / "checkpoints" / "4").exists():  # mid-run: a checkpoint, not the end
    assert time.time() < end and _state(job) in ("PENDING", "RUNNING"), log.read_text()[-3000:]
    time.sleep(0.5)
  subprocess.run(how.split() + [job], check=True)
  assert _wait(job, log) == "COMPLETED", log.read_text()[-3000:]
  text = log.read_text()
  assert "--resume" in text and "restart 1" in text, text[-3000:]
  states = subprocess.run(["sacct", "-n", "-D", "-X", "-j", job, "-o", "State"],
                          capture_output=True, text=True).stdout.split()
  assert "REQUEUED" in states and states[-1] == "COMPLETED", states
  params = _params(workdir)
  assert params.keys() == uninterrupted[0].keys()
  for name in params:  # the same processes and reductions: bit-identical
    np.testing.assert_array_equal(params[name], uninterrupted[0][name], err_msg=name)
