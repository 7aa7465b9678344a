"""The train step and loop: sharding equality, accumulation, exact resume, failures."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from kmlm_jax.config import DataConfig, MeshConfig
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.training import loop
from kmlm_jax.training.trainer import to_host
from kmlm_jax.training.data import SyntheticBatches
from tests.training import synthetic_config

ROOT = Path(__file__).resolve().parents[2]


def _config(**train):
  return synthetic_config(**train)


def _losses(config, mesh_shape, devices, steps=3):
  config = dataclasses.replace(config, mesh=MeshConfig(shape=mesh_shape))
  trainer = loop.pretraining_trainer(config, devices)
  state = trainer.init_state()
  batches = SyntheticBatches(config.data, config.model.vocab_size)
  out = []
  for _ in range(steps):
    state, m = trainer.step(state, next(batches))
    out.append(float(m["loss"]))
  return np.array(out), to_host(state.params)


@pytest.fixture(scope="module")
def single_device():
  return _losses(_config(), (1, 1, 1), jax.devices()[:1])


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4), (2, 4, 1), (1, 8, 1)])
def test_three_steps_equal_on_8_devices(shape, single_device):
  ref, _ = single_device
  losses, _ = _losses(_config(), shape, jax.devices())
  assert (np.abs(losses - ref) <= 1e-5 * np.abs(ref)).all(), (losses, ref)
  assert ref[2] < ref[0]  # and it learns


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch():
  no_dropout = _config()
  no_dropout = dataclasses.replace(no_dropout, model=no_dropout.model.replace(
      dropout_rate=0.0, attention_dropout_rate=0.0))
  a, pa = _losses(no_dropout, (1, 1, 1), jax.devices()[:1])
  accum = dataclasses.replace(no_dropout, train=dataclasses.replace(no_dropout.train,
                                                                    grad_accum_steps=4))
  b, pb = _losses(accum, (1, 1, 1), jax.devices()[:1])
  assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_allclose(x, y, atol=2e-6, rtol=1e-4)


def test_bad_mesh_or_batch_fails_before_compiling(tmp_path):
  with pytest.raises(ValueError, match="needs 3 devices"):
    loop.train(dataclasses.replace(_config(), mesh=MeshConfig(shape=(3, 1, 1))), tmp_path)
  bad = dataclasses.replace(_config(), mesh=MeshConfig(shape=(8, 1, 1)),
                            data=DataConfig(mixture="synthetic", seq_length=64,
                                            max_predictions=16, batch_size=12))
  with pytest.raises(ValueError, match="cannot be split over the 8 devices.*multiple of 8"):
    loop.train(bad, tmp_path / "b")
  assert not (tmp_path / "b" / "checkpoints").exists() or \
      not any((tmp_path / "b" / "checkpoints").iterdir())


def _final_params(workdir):
  from kmlm_jax import model_checkpoint as mc
  from flax import traverse_util
  _, params, _ = mc.load_model_checkpoint(Path(workdir) / "model")
  return traverse_util.flatten_dict(params, sep=".")


REAL_DATA = ('preset("tiny", vocab_size=250002, hidden_size=32, num_heads=2, '
             'intermediate_size=64, max_position_embeddings=130), DataConfig(mixture="kmlm_mix", '
             'seq_length=128, max_predictions=20, batch_size=8, block_examples=64)')


def _write_config(tmp_path, steps=8, every=2, real=False):
  path = tmp_path / "cfg.py"
  model_and_data = REAL_DATA if real else (
      'preset("tiny", vocab_size=1000, max_position_embeddings=66), '
      'DataConfig(mixture="synthetic", seq_length=64, max_predictions=16, batch_size=8)')
  path.write_text(f"""
from kmlm_jax.config import *
def get_config():
  return ExperimentConfig("kill", {model_and_data},
      TrainConfig(steps={steps}, warmup_steps=2, learning_rate=1e-3, checkpoint_every={every},
                  log_every=1), MeshConfig(shape=(1, 1, 1)))
""")
  return path


def _cli(*args, **popen):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  return subprocess.Popen([sys.executable, "-m", "kmlm_jax.cli", "train", *map(str, args)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **popen)


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
  """On the real input (the sample's KMLM-Mix token cache): the input state resumes exactly."""
  from kmlm_jax.experiment import load_config
  from kmlm_jax.training.data import prepare_input
  config = _write_config(tmp_path, steps=8, every=2, real=True)
  prepare_input(load_config(config).data, progress=False)  # build the cache outside the timing
  full = _cli("--config", config, "--workdir", tmp_path / "full")
  assert full.wait(timeout=300) == 0, full.stderr.read()[-2000:]

  run = _cli("--config", config, "--workdir", tmp_path / "killed")
  ckpts = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 240
  # Kill once step 4 is committed (the run is then somewhere in steps 4-8).
  while not (ckpts / "4" / "commit_success.txt").exists() and time.time() < deadline:
    assert run.poll() is None, run.stderr.read()[-2000:]
    time.sleep(0.05)
  run.send_signal(signal.SIGKILL)
  run.wait()
  assert not (tmp_path / "killed" / "model").exists()  # it did not finish
  resumed = _cli("--config", config, "--workdir", tmp_path / "killed", "--resume")
  assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
  a, b = _final_params(tmp_path / "full"), _final_params(tmp_path / "killed")
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow
def test_sigterm_saves_and_exits_zero(tmp_path):
  config = _write_config(tmp_path, steps=400, every=1000)
  run = _cli("--config", config, "--workdir", tmp_path / "t")
  log = tmp_path / "t" / "tb"
  deadline = time.time() + 240
  while not log.exists() and time.time() < deadline:
    time.sleep(0.1)
  time.sleep(3)
  run.send_signal(signal.SIGTERM)
  assert run.wait(timeout=120) == 0, run.stderr.read()[-2000:]
  out = run.stdout.read()
  assert "status=preempted" in out
  steps = sorted(int(p.name) for p in (tmp_path / "t" / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps and steps[-1] < 400


@pytest.mark.slow
def test_corrupted_latest_checkpoint_falls_back(tmp_path, caplog):
  config = _config(steps=4)
  loop.train(config, tmp_path, progress=False)
  latest = tmp_path / "checkpoints" / "4" / "state"
  for f in latest.rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
  longer = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=6))
  with caplog.at_level("WARNING", logger="kmlm_jax.training"):
    summary = loop.train(longer, tmp_path, resume=True, allow_schedule_change=True,
                         progress=False)
  assert "checkpoint at step 4" in caplog.text and "cannot be restored" in caplog.text
  assert summary["first_step"] == 2 and summary["steps"] == 6


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = _config(steps=6)

  def source(start):
    clean = SyntheticBatches(config.data, config.model.vocab_size, start=start)
    for i in range(start, 100):
      b = next(clean)
      if i == 3:  # the 4th step sees a NaN weight
        b["mlm_weights"] = b["mlm_weights"] * np.float32("nan")
      yield b

  with pytest.raises(loop.NonFiniteLoss,
                     match="step 4: the loss, gradient or update is not finite"):
    loop.train(config, tmp_path, progress=False, batch_source=source)
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [2]
  assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_resume_needs_flag(tmp_path):
  loop.train(_config(steps=2), tmp_path, progress=False)
  with pytest.raises(loop.WorkdirError, match="--resume"):
    loop.train(_config(steps=4), tmp_path, progress=False)


@pytest.mark.slow
def test_metrics_and_tensorboard(tmp_path):
  summary = loop.train(_config(steps=4), tmp_path, progress=False)
  last = summary["history"][-1]
  for key in ("loss", "grad_norm", "learning_rate", "tokens_per_s", "tflops_per_device",
              "mlm/loss", "knowledge/accuracy", "reasoning/loss"):
    assert key in last and np.isfinite(last[key]), key
  assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
  assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  from kmlm_jax import model_checkpoint as mc
  model = _config().model
  path = tmp_path_factory.mktemp("ckpt") / "model"
  mc.save_model_checkpoint(path, model, mc.model_params(Encoder(model, rngs=nnx.Rngs(7))))
  return path


def _first_loss(config, workdir):
  summary = loop.train(config, workdir, progress=False)
  assert summary["status"] == "completed"
  return summary["history"][0]["loss"]


@pytest.mark.parametrize("setting,tolerance", [("model.scan_layers=false", 1e-5),
                                               ("model.remat_policy=full", 1e-5),
                                               ("model.dtype=bfloat16", 3e-2)])
@pytest.mark.slow
def test_init_from_accepts_any_run_setting(tmp_path, tiny_checkpoint, setting, tolerance):
  from kmlm_jax.config import override
  config = dataclasses.replace(_config(steps=1, checkpoint_every=1),
                               init_from=str(tiny_checkpoint))
  reference = _first_loss(config, tmp_path / "ref")
  changed = override(config, [setting])
  assert changed.model != config.model
  assert abs(_first_loss(changed, tmp_path / "run") - reference) <= tolerance * reference


def test_init_from_rejects_another_architecture(tmp_path, tiny_checkpoint):
  config = dataclasses.replace(_config(steps=1), init_from=str(tiny_checkpoint))
  config = dataclasses.replace(config, model=config.model.replace(num_layers=3))
  with pytest.raises(loop.WorkdirError, match=r"num_layers=2 \(run: 3\)"):
    loop.train(config, tmp_path, progress=False)
