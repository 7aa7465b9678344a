"""`kmlm-jax train` checkpoints: no data loss, integrity, resume.

A checkpoint saved by another configuration is a config error (exit 2) and
nothing moves; a corrupt one (a flipped byte) is moved aside under a fresh
name and the one before restores bit-identically; a resume that restores
nothing refuses to start from step 0; a changed learning-rate schedule needs
--allow-schedule-change; a NaN learning rate saves nothing; a full disk stops
the run with one line (exit 1) and the checkpoints before intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kmlm_jax.cli import main
from kmlm_jax.errors import NonFiniteLoss
from tests.bad_inputs import check
from tests.training.test_checkpointing import flip_byte

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
from kmlm_jax.config import *
def get_config():
  return ExperimentConfig("ckpt", preset("tiny", vocab_size=1000, hidden_size=32, num_heads=2,
                                         intermediate_size=64, max_position_embeddings=66),
      DataConfig(mixture="synthetic", seq_length=64, max_predictions=16, batch_size=8),
      TrainConfig(steps=4, warmup_steps=2, learning_rate=1e-3, checkpoint_every=2, log_every=1),
      MeshConfig(shape=(-1, 1, 1)))
"""


def _params(workdir: Path) -> dict:
  from flax import traverse_util

  from kmlm_jax import model_checkpoint as mc
  return traverse_util.flatten_dict(mc.load_model_checkpoint(workdir / "model")[1], sep=".")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(config file, a 4-step run with checkpoints 2 and 4, its final parameters)."""
  root = tmp_path_factory.mktemp("trained")
  config = root / "config.py"
  config.write_text(CONFIG)
  assert main(["train", "--config", str(config), "--workdir", str(root / "run")]) == 0
  return config, root / "run", _params(root / "run")


def _copy(trained, tmp_path) -> Path:
  work = tmp_path / "run"
  shutil.copytree(trained[1], work)
  return work


def _files(work: Path) -> dict:
  return {str(p.relative_to(work)): p.stat().st_size for p in work.rglob("*")
          if p.is_file() and p.relative_to(work).parts[0].startswith("checkpoints")}


def _resume(trained, work, *extra) -> list[str]:
  return ["train", "--config", str(trained[0]), "--workdir", str(work), "--resume", *extra]


@pytest.mark.slow  # the fixture trains (compiles the step)
@pytest.mark.parametrize("override,needles", [
    ("model.hidden_size=64", ["model.hidden_size=32 (this run: 64)", "step 4"]),
    ("model.num_layers=3", ["model.num_layers=2 (this run: 3)"]),
    ("model.vocab_size=1200", ["model.vocab_size=1000 (this run: 1200)"]),
    ("train.grad_clip_norm=0", ["does not fit this run's state", "opt_state/"]),
])
def test_resume_with_another_setting_is_a_config_error_and_moves_nothing(
    trained, tmp_path, capsys, override, needles):
  work = _copy(trained, tmp_path)
  before = _files(work)
  check(capsys, _resume(trained, work, override), "train", needles)
  assert _files(work) == before and not (work / "checkpoints.corrupt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("override,needle", [
    ("train.steps=8", "train.steps=4 (this run: 8)"),
    ("train.learning_rate=0.002", "train.learning_rate=0.001 (this run: 0.002)"),
    ("train.warmup_steps=3", "train.warmup_steps=2 (this run: 3)"),
])
def test_resume_with_another_schedule_needs_the_flag(trained, tmp_path, capsys, override,
                                                      needle):
  work = _copy(trained, tmp_path)
  before = _files(work)
  check(capsys, _resume(trained, work, override), "train",
        [needle, "--allow-schedule-change"])
  assert _files(work) == before


@pytest.mark.slow
def test_corrected_resume_continues_from_the_newest_step_with_the_whole_history(
    trained, tmp_path, capsys, caplog):
  work = _copy(trained, tmp_path)
  check(capsys, _resume(trained, work, "model.hidden_size=64"), "train", ["model.hidden_size"])
  with caplog.at_level("INFO", logger="kmlm_jax.training"):
    assert main(_resume(trained, work, "--allow-schedule-change", "train.steps=6")) == 0
  assert "resumed from step 4 (input position 4)" in caplog.text
  assert "compiling the train step" in caplog.text
  assert "compiled the train step and ran step 5 in" in caplog.text
  summary = json.loads((work / "summary.json").read_text())
  assert summary["first_step"] == 4 and summary["steps"] == 6
  assert [h["step"] for h in summary["history"]] == [1, 2, 3, 4, 5, 6]
  assert not (work / "checkpoints.corrupt").exists()


@pytest.mark.slow
def test_flipped_byte_falls_back_bit_identically_and_quarantine_never_deletes(
    trained, tmp_path, capsys, caplog):
  work = _copy(trained, tmp_path)
  flip_byte(work / "checkpoints" / "4")
  with caplog.at_level("INFO", logger="kmlm_jax.training"):
    assert main(_resume(trained, work)) == 0
  assert "checkpoint at step 4" in caplog.text and "checksum mismatch" in caplog.text
  assert "resumed from step 2 (input position 2)" in caplog.text
  reference, params = trained[2], _params(work)
  assert sorted(params) == sorted(reference)
  for name in reference:  # as the run that went on from step 2 without stopping
    np.testing.assert_array_equal(params[name], reference[name], err_msg=name)
  capsys.readouterr()

  # Both checkpoints corrupt: each is moved aside (step 4 again, under a fresh name), and
  # the resume refuses to start from step 0, naming what it tried.
  flip_byte(work / "checkpoints" / "4")
  for f in (work / "checkpoints" / "2" / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[:10])
  check(capsys, _resume(trained, work), "train",
        ["no checkpoint could be restored", "start from step 0", "step 4 (checksum mismatch",
         "step 2 (", "checkpoints.corrupt/4.1"])
  corrupt = sorted(p.name for p in (work / "checkpoints.corrupt").iterdir())
  assert corrupt == ["2", "4", "4.1"]
  check(capsys, _resume(trained, work), "train", ["quarantined in", "2, 4, 4.1", "step 0"])


@pytest.mark.slow
def test_nan_learning_rate_saves_no_checkpoint(trained, tmp_path):
  """`train.learning_rate=nan` is refused by the config check; past it (a library caller),
  the step's guard stops the run before anything non-finite is saved."""
  from kmlm_jax.experiment import load_config
  from kmlm_jax.training import loop
  config = load_config(trained[0], ["train.checkpoint_every=1"])
  config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                 learning_rate=float("nan")))
  with pytest.raises(NonFiniteLoss) as e:
    loop.train(config, tmp_path, progress=False)
  assert e.value.exit_code == 3 and len(str(e.value).splitlines()) == 1
  assert "step 1: the loss, gradient or update is not finite" in str(e.value)
  saved = [p.name for p in (tmp_path / "checkpoints").iterdir()]
  assert saved == [] and not (tmp_path / "model").exists()


@pytest.mark.slow
def test_full_disk_stops_with_one_line_and_the_checkpoints_before_intact(trained, tmpfs):
  """The first checkpoint (about 1 MB) fits the 1.5 MiB disk, the second does not: the
  space check before saving or Orbax's failed write stops the run."""
  disk = tmpfs("disk", "1536k")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
         "JAX_PLATFORMS": "cpu"}
  run = subprocess.Popen([sys.executable, "-m", "kmlm_jax.cli", "train", "--config",
                          str(trained[0]), "--workdir", str(disk / "run")], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  first = disk / "run" / "checkpoints" / "2" / "commit_success.txt"
  deadline = time.time() + 300
  while not first.exists() and run.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  saved_at = time.time()
  try:
    _, err = run.communicate(timeout=60)  # from the first checkpoint on: no hang
  finally:
    run.kill()
  assert time.time() - saved_at < 60
  assert run.returncode == 1, err[-3000:]
  errors = [line for line in err.splitlines() if "error" in line.lower()]
  assert len(errors) == 1 and errors[0].startswith("kmlm-jax train: error: "), err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  assert "checkpoints" in errors[0] and "(steps [2])" in errors[0], errors
  assert sorted(p.name for p in (disk / "run" / "checkpoints").iterdir()) == ["2"]
  assert (disk / "run" / "checkpoints" / "2" / "checksums" / "metadata").exists()
  assert not (disk / "run" / "model").exists()


FULL_DISK = """
import sys
from kmlm_jax.training import checkpointing as ck
from tests.training.test_checkpointing import _state
ck.Checkpointer._check_space = lambda self, state: None  # let Orbax meet the full disk
c = ck.Checkpointer(sys.argv[1], async_save=sys.argv[2] == "async")
c.save(1, _state(), {"step": 1})
for _ in range(3):  # each failure cleans up after itself: the next one fails the same way
  try:
    for step in (2, 3):
      c.save(step, _state(), {"step": step})
  except ck.WriteError as e:
    print("WriteError:", e)
c.close()
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_full_disk_during_an_orbax_save_is_one_write_error_without_hanging(tmpfs, mode):
  """Past the space check (disabled here), Orbax's failed write (in its background thread
  when asynchronous) is one `WriteError`, without a hang or a traceback on the console."""
  disk = tmpfs("disk", "200k")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  run = subprocess.run([sys.executable, "-c", FULL_DISK, str(disk / "c"), mode], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-3000:]
  lines = [line for line in run.stdout.splitlines() if line.startswith("WriteError")]
  assert len(lines) == 3, run.stdout
  assert all("No space left on device" in line and "(steps [1])" in line for line in lines)
  assert run.stderr == "", run.stderr[-3000:]  # no Orbax tracebacks, no event-loop errors
  assert sorted(p.name for p in (disk / "c").iterdir()) == ["1"]
