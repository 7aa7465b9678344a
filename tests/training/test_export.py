"""Exporting and evaluating any training checkpoint: `convert --from` / `eval --ckpt` /
`init_from` accept WORKDIR/checkpoints/STEP and WORKDIR (its newest step) besides a model
checkpoint; a damaged or missing step is one line naming it.

The fast tests read checkpoints written by `checkpointing.Checkpointer` as the train loop
writes them (no train step compiled); the acceptance test preempts a real run by SIGTERM.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx, traverse_util
from safetensors.numpy import load_file

from kmlm_jax import model_checkpoint as mc
from kmlm_jax.cli import main as cli_main
from kmlm_jax.config import ExperimentConfig
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.training import checkpointing, loop
from kmlm_jax.training.data import SyntheticBatches
from kmlm_jax.training.trainer import TrainState
from tests.evaluation import tiny_run
from tests.training import synthetic_config


def _save_run(workdir: Path, config, steps: dict[int, dict], vocab: str | None) -> None:
  """WORKDIR/config.json and WORKDIR/checkpoints/STEP for each {step: params}, with Adam
  state, meta and checksums as the train loop saves them."""
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps({"data": {"vocab": vocab}}))
  saver = checkpointing.Checkpointer(workdir / "checkpoints", async_save=False)
  for step, params in steps.items():
    params = jax.tree.map(jnp.asarray, params)
    state = TrainState(params, optax.adam(1e-3).init(params), jnp.int32(step),
                       jax.random.key_data(jax.random.key(0)))
    saver.save(step, state, {"input": {"kind": "external", "position": step}, "step": step,
                             "config": "export-test", "model": config.architecture(),
                             "schedule": {}})
  saver.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A work directory with steps 2 and 3 (different parameters) of the tiny BERT model of
  the eval tests, trained with its WordPiece vocabulary."""
  tmp = tmp_path_factory.mktemp("export")
  tok = tiny_run.wordpiece(tmp / "tok").parent
  config = tiny_run.model()
  params = mc.model_params(Encoder(config, rngs=nnx.Rngs(0)))
  later = jax.tree.map(lambda x: x + 1.0, params)
  _save_run(tmp / "run", config, {2: params, 3: later}, str(tok))
  return tmp / "run", {2: params, 3: later}, tok


def _flat(params) -> dict:
  return traverse_util.flatten_dict(params, sep=".")


def _assert_params_equal(a, b) -> None:
  a, b = _flat(a), _flat(b)
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _one_error_line(capsys, args) -> str:
  code = cli_main([str(a) for a in args])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1, (code, err)
  return err[0]


def test_the_three_forms_read_their_step(run):
  workdir, params, tok = run
  for path, step in [(workdir, 3), (workdir / "checkpoints", 3),
                     (workdir / "checkpoints" / "2", 2), (workdir / "checkpoints" / "3", 3)]:
    config, loaded, metadata = mc.load_model_checkpoint(path)
    assert config == tiny_run.model() and metadata["step"] == step, (path, metadata)
    assert metadata["verified"]
    _assert_params_equal(loaded, params[step])
    assert mc.tokenizer_dir_of(path) == tok
    assert mc.read_model_config(path)[0] == config


def test_only_the_params_are_restored(run, monkeypatch):
  workdir, _, _ = run
  asked = []
  restore = ocp.Checkpointer.restore

  def spy(self, directory, *args, **kwargs):
    asked.append(kwargs["args"])
    return restore(self, directory, *args, **kwargs)

  monkeypatch.setattr(ocp.Checkpointer, "restore", spy)
  mc.load_model_checkpoint(workdir)
  (args,) = asked
  assert list(args.item) == ["params"] and args.partial_restore


def test_convert_from_workdir_exports_the_newest_step(run, tmp_path, capsys):
  workdir, params, _ = run
  assert cli_main(["convert", "--from", str(workdir), "--to-hf", str(tmp_path / "hf")]) == 0
  out = capsys.readouterr().out
  assert f"training checkpoint {workdir / 'checkpoints' / '3'}, step 3" in out
  assert "checksums verified" in out
  exported = load_file(tmp_path / "hf" / "model.safetensors")
  word = next(v for k, v in exported.items() if k.endswith("word_embeddings.weight"))
  np.testing.assert_array_equal(word, params[3]["embeddings"]["word"])
  assert (tmp_path / "hf" / "vocab.txt").exists()  # the run's tokenizer


def _flip_param_bit(step_dir: Path) -> None:
  """Flips one bit of STEP/state's data such that it still reads with a parameter changed
  (Orbax's data files are compressed and hold unused bytes: chosen by reading back)."""
  def params():
    with ocp.StandardCheckpointer() as reader:
      return jax.tree.leaves(reader.restore(step_dir / "state")["params"])

  before = params()
  for f in sorted((p for p in (step_dir / "state").rglob("*") if p.is_file()
                   and p.parent.name == "d"), key=lambda p: -p.stat().st_size):
    raw = f.read_bytes()
    for at in range(len(raw) // 8, len(raw), max(1, len(raw) // 16)):
      f.write_bytes(raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1:])
      try:
        if any(not np.array_equal(x, y) for x, y in zip(before, params())):
          return
      except Exception:  # a flip the reader notices: not the corruption wanted here
        pass
      f.write_bytes(raw)
  raise AssertionError(f"no bit of {step_dir} changes a parameter and still reads")


@pytest.fixture
def damaged(run, tmp_path):
  """A copy of the run to damage."""
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(run[0], workdir)
  return workdir


def test_flipped_byte_is_refused_with_one_line(damaged, tmp_path, capsys):
  step = damaged / "checkpoints" / "3"
  _flip_param_bit(step)
  line = _one_error_line(capsys, ["convert", "--from", step, "--to-hf", tmp_path / "hf"])
  assert str(step) in line and "corrupt training checkpoint" in line
  assert "checksum mismatch in params/" in line and "steps 2" in line
  assert not (tmp_path / "hf").exists()


def test_edited_meta_is_refused_and_the_workdir_form_skips_it(damaged, tmp_path, capsys):
  step = damaged / "checkpoints" / "3"
  meta = json.loads((step / "meta" / "metadata").read_text())
  (step / "meta" / "metadata").write_text(json.dumps({**meta, "config": "edited"}))
  line = _one_error_line(capsys, ["convert", "--from", step, "--to-hf", tmp_path / "hf"])
  assert str(step) in line and "meta differs from its checksum" in line
  assert mc.read_model_config(damaged)[1]["step"] == 2


@pytest.mark.parametrize("case", ["missing_step", "empty_checkpoints", "unfinished_step"])
def test_missing_step_is_one_line(run, tmp_path, capsys, case):
  workdir, _, _ = run
  if case == "missing_step":
    source, needles = workdir / "checkpoints" / "7", ["no such training checkpoint", "steps 2, 3"]
  elif case == "empty_checkpoints":
    (tmp_path / "w" / "checkpoints").mkdir(parents=True)
    source, needles = tmp_path / "w", ["w/checkpoints", "none saved yet"]
  else:
    (tmp_path / "w" / "checkpoints" / "5" / "meta").mkdir(parents=True)
    source, needles = tmp_path / "w" / "checkpoints" / "5", ["not a complete training"]
  line = _one_error_line(capsys, ["convert", "--from", source, "--to-hf", tmp_path / "hf"])
  assert str(source) in line, line
  for needle in needles:
    assert needle in line, line


def test_eval_probes_a_training_checkpoint(run, tmp_path):
  from kmlm_jax.evaluation import run as eval_run
  workdir, _, tok = run
  config = eval_run.EvalConfig(corpus_dir=str(tiny_run.corpus(tmp_path / "corpus")),
                               tasks=("probe",))
  results = eval_run.run(config, workdir / "checkpoints" / "2", tmp_path / "out")
  assert list(results) == [f"{workdir.name}@2"]
  assert "probe" in results[f"{workdir.name}@2"]
  report = json.loads((tmp_path / "out" / "results.json").read_text())
  assert report["checkpoints"] == {f"{workdir.name}@2": str(workdir / "checkpoints" / "2")}


def test_init_from_a_training_checkpoint(run):
  from kmlm_jax.experiment import check_paths
  workdir, params, _ = run
  config = dataclasses.replace(_xlmr_config(), model=tiny_run.model(),
                               init_from=str(workdir / "checkpoints" / "2"))
  check_paths(config)
  _assert_params_equal(loop.load_init_params(config), params[2])


# ---------------------------------------------------------------- acceptance: SIGTERM at k


def _xlmr_config(**train) -> ExperimentConfig:
  return synthetic_config("preempted", **train)


def _sigterm_at(config: ExperimentConfig, k: int):
  """A batch source that sends this process SIGTERM when batch k (step k) is drawn."""
  def source(start):
    batches = SyntheticBatches(config.data, config.model.vocab_size, start=start)
    for i in range(start, config.train.steps):
      if i + 1 == k:
        os.kill(os.getpid(), signal.SIGTERM)
      yield next(batches)
  return source


@pytest.mark.slow
def test_preempted_run_exports_and_verifies_against_pytorch(tmp_path, capsys):
  config, k = _xlmr_config(), 3
  summary = loop.train(config, tmp_path / "run", progress=False,
                       batch_source=_sigterm_at(config, k))
  assert summary["status"] == "preempted" and summary["steps"] == k
  assert not (tmp_path / "run" / "model").exists()
  step = tmp_path / "run" / "checkpoints" / str(k)
  assert cli_main(["convert", "--from", str(step), "--to-hf", str(tmp_path / "hf"),
                   "--verify"]) == 0
  out = capsys.readouterr().out
  diff = float(re.search(r"max_abs_diff=(\S+)", out).group(1))
  assert diff <= 1e-4, out
  assert f"step {k}: parameters only, checksums verified" in out
  # --from WORKDIR is the same step; the export holds the preempted state's parameters
  assert mc.read_model_config(tmp_path / "run")[1]["step"] == k
  with ocp.StandardCheckpointer() as reader:
    trained = reader.restore(step / "state")["params"]
  _assert_params_equal(mc.load_model_checkpoint(tmp_path / "run")[1],
                       jax.tree.map(np.asarray, trained))
