"""Two CPU processes joined by jax.distributed: like one process, and resumable on either count."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from kmlm_jax.config import DataConfig, ExperimentConfig, MeshConfig, TrainConfig, preset
from kmlm_jax.training import loop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# ---------------------------------------------------------------- resume on another host count


def real_config(steps: int) -> ExperimentConfig:
  """Tiny model on the sample's KMLM-Mix input (8 input shards: 1 or 2 processes)."""
  return ExperimentConfig(
      "elastic", preset("tiny", vocab_size=250002, hidden_size=32, num_heads=2,
                        intermediate_size=64, num_layers=1, max_position_embeddings=130),
      DataConfig(mixture="kmlm_mix", seq_length=128, max_predictions=20, batch_size=8,
                 input_shards=8, block_examples=64),
      TrainConfig(steps=steps, warmup_steps=1, learning_rate=1e-3, checkpoint_every=2,
                  log_every=1, async_checkpointing=False),
      MeshConfig(shape=(2, 2, 2)))


WORKER = """
import dataclasses, sys
import jax
address, process, workdir, steps, mesh = sys.argv[1:]
if address != "-":
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=address, num_processes=2,
                             process_id=int(process))
from kmlm_jax.config import MeshConfig
from tests.training.test_multihost import real_config
from kmlm_jax.training import loop
config = dataclasses.replace(real_config(int(steps)),
                             mesh=MeshConfig(shape=tuple(map(int, mesh.split(",")))))
loop.train(config, workdir, resume=True, allow_schedule_change=True, progress=False)
"""


def _processes(tmp_path, workdir, steps: int, *, count: int = 2, devices: int = 4,
               mesh: str = "2,2,2") -> None:
  """`count` (1 or 2) processes of `devices` CPU devices each, joined by jax.distributed."""
  address = f"127.0.0.1:{_free_port()}" if count == 2 else "-"
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "JAX_PLATFORMS": "cpu"}
  # Files, not pipes: a worker blocked on a full pipe would stall both.
  logs = [tmp_path / f"{workdir.name}-err{i}.txt" for i in range(count)]
  workers = [subprocess.Popen([sys.executable, "-c", WORKER, address, str(i), str(workdir),
                               str(steps), mesh], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(log, "w"))
             for i, log in enumerate(logs)]
  try:
    for w in workers:
      w.wait(timeout=300)
  finally:
    for w in workers:
      w.kill()
  for w, log in zip(workers, logs):
    assert w.returncode == 0, log.read_text()[-3000:]


def _input_state(workdir, step: int) -> list:
  meta = workdir / "checkpoints" / str(step) / "meta" / "metadata"
  return json.loads(meta.read_text())["input"]["blocks"]


def _params(workdir) -> dict:
  from kmlm_jax import model_checkpoint as mc
  from flax import traverse_util
  return traverse_util.flatten_dict(mc.load_model_checkpoint(workdir / "model")[1], sep=".")


def test_resume_on_another_number_of_processes(tmp_path):
  """Two CPU processes joined by jax.distributed train like one process with all devices,
  and a run resumed 2 -> 1 or 1 -> 2 processes continues the same global input order:
  the same input states at every checkpoint and the same final parameters."""
  from kmlm_jax.training.data import prepare_input
  prepare_input(real_config(4).data, progress=False)  # the token cache, before any process
  assert jax.device_count() == 8
  loop.train(real_config(4), tmp_path / "full", progress=False)
  _processes(tmp_path, tmp_path / "two_then_one", 2)
  loop.train(real_config(4), tmp_path / "two_then_one", resume=True, allow_schedule_change=True,
             progress=False)
  loop.train(real_config(2), tmp_path / "one_then_two", progress=False)
  _processes(tmp_path, tmp_path / "one_then_two", 4)
  for run in ("two_then_one", "one_then_two"):
    for step in (2, 4):  # the input state saved by either process count is the same
      assert _input_state(tmp_path / run, step) == _input_state(tmp_path / "full", step), run
    a, b = _params(tmp_path / "full"), _params(tmp_path / run)
    for name in a:
      np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=f"{run} {name}")


def test_hosts_that_hold_the_same_rows_load_the_same_share(tmp_path):
  """A mesh whose batch axes do not span the hosts (mesh (1,1,2): the tensor axis across 2
  processes of 1 device) gives both hosts the whole batch (`Partitioner.host_share`): the
  same input states and, with every reduction over 2 terms, bit-identical parameters to
  one process of 2 devices."""
  from kmlm_jax.training.data import prepare_input
  prepare_input(real_config(4).data, progress=False)
  _processes(tmp_path, tmp_path / "one", 4, count=1, devices=2, mesh="1,1,2")
  _processes(tmp_path, tmp_path / "two", 4, count=2, devices=1, mesh="1,1,2")
  for step in (2, 4):
    assert _input_state(tmp_path / "two", step) == _input_state(tmp_path / "one", step)
  a, b = _params(tmp_path / "one"), _params(tmp_path / "two")
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
