"""keep_best, early stop and export=best under a scripted validation metric sequence.

The validator is replaced by one that returns `validation/loss` = 5, 3, 4, 6, 7 at
successive validations (every 2 steps) and records the parameters it saw, so the
best checkpoint (step 4) and its parameters are known exactly.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from flax import traverse_util

from kmlm_jax.training import loop, validation
from kmlm_jax.training.trainer import to_host
from tests.training.test_loop import _config

SCRIPT = [5.0, 3.0, 4.0, 6.0, 7.0]


@pytest.fixture
def scripted(monkeypatch):
  """{step: host params} the fake validator saw; it returns SCRIPT's values in turn."""
  seen = {}
  values = list(SCRIPT)

  class Scripted:
    def __init__(self, config, trainer):
      self.trainer = trainer

    def __call__(self, params):
      step = len(seen)
      seen[step] = to_host(params)
      return {"validation/loss": values.pop(0), "validation/mlm/accuracy": 0.1 * step}

  monkeypatch.setattr(validation, "Validator", Scripted)
  return seen


def _keep_best_config(steps, **train):
  return _config(steps=steps, eval_every=2, keep_checkpoints=1, checkpoint_every=100,
                 keep_best="validation/loss", export="best", **train)


def _steps(workdir: Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _exported(workdir: Path) -> dict:
  from kmlm_jax import model_checkpoint as mc
  return traverse_util.flatten_dict(mc.load_model_checkpoint(workdir / "model")[1], sep=".")


def _assert_params_equal(exported: dict, params: dict) -> None:
  flat = traverse_util.flatten_dict(params, sep=".")
  assert sorted(exported) == sorted(flat)
  for name in flat:
    np.testing.assert_array_equal(exported[name], flat[name], err_msg=name)


@pytest.mark.slow
def test_keep_best_keeps_and_exports_the_best_step(tmp_path, scripted):
  summary = loop.train(_keep_best_config(10), tmp_path, progress=False)
  assert summary["status"] == "completed"
  assert [v["validation/loss"] for v in summary["validation"]] == SCRIPT
  assert summary["best"] == {"metric": "validation/loss", "value": 3.0, "step": 4,
                             "since_best": 3}
  assert _steps(tmp_path) == [4, 10]  # the newest (keep_checkpoints=1) and the best
  _assert_params_equal(_exported(tmp_path), scripted[1])  # the 2nd validation: step 4
  with pytest.raises(AssertionError):  # and not the last parameters
    _assert_params_equal(_exported(tmp_path), scripted[4])


@pytest.mark.slow
def test_early_stop_after_patience(tmp_path, scripted):
  summary = loop.train(_keep_best_config(20, early_stop_patience=2), tmp_path, progress=False)
  # 5 (best), 3 (best, step 4), 4, 6: two validations without improvement -> stop at step 8
  assert summary["status"] == "early_stopped" and summary["steps"] == 8
  assert json.loads((tmp_path / "summary.json").read_text())["status"] == "early_stopped"
  assert _steps(tmp_path) == [4, 8]
  _assert_params_equal(_exported(tmp_path), scripted[1])


@pytest.mark.slow
def test_resume_continues_the_best_so_far(tmp_path, scripted):
  first = loop.train(_keep_best_config(6, early_stop_patience=3), tmp_path, progress=False)
  assert first["best"] == {"metric": "validation/loss", "value": 3.0, "step": 4,
                           "since_best": 1}
  assert _steps(tmp_path) == [4, 6]
  # Steps 8 and 10 score 6 and 7: the best stays step 4 (saved before the resume) and the
  # patience count goes on from 1 to 3: an early stop at step 10.
  summary = loop.train(_keep_best_config(12, early_stop_patience=3), tmp_path, resume=True,
                       allow_schedule_change=True, progress=False)
  assert summary["first_step"] == 6
  assert summary["status"] == "early_stopped" and summary["steps"] == 10
  assert summary["best"] == {"metric": "validation/loss", "value": 3.0, "step": 4,
                             "since_best": 3}
  assert [v["step"] for v in summary["validation"]] == [2, 4, 6, 8, 10]
  assert _steps(tmp_path) == [4, 10]
  _assert_params_equal(_exported(tmp_path), scripted[1])


def test_keep_best_unknown_metric_fails_before_compiling():
  from kmlm_jax.experiment import ConfigError, preflight
  config = _keep_best_config(4)
  bad = dataclasses.replace(config, train=dataclasses.replace(
      config.train, keep_best="validation/xlr/accuracy"))
  with pytest.raises(ConfigError, match=r"train.keep_best: 'validation/xlr/accuracy' is not a "
                     r"validation metric of this run; known: validation/loss, "
                     r"validation/mlm/loss, .*validation/reasoning/accuracy$"):
    preflight(bad)
  preflight(config)  # validation/loss is known
