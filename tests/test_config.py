"""`key=value` overrides and the checks of the run-operation fields."""

import pytest

from kmlm_jax.config import ExperimentConfig, override, preset
from kmlm_jax.errors import InputError


def _config():
  return ExperimentConfig("t", preset("tiny", remat_policy="full"))


def test_a_choice_named_none_is_a_string_not_none():
  config = override(_config(), ["model.remat_policy=none", "train.keep_best=none"])
  assert config.model.remat_policy == "none" and config.train.keep_best is None


def test_an_empty_tuple_default_parses_by_its_type():
  assert override(_config(), ["train.profile_steps=2,5"]).train.profile_steps == (2, 5)
  with pytest.raises(InputError, match="comma-separated int"):
    override(_config(), ["train.profile_steps=a,b"])


@pytest.mark.parametrize("overrides,message", [
    (["train.profile_steps=5,2"], "train.profile_steps"),
    (["train.profile_steps=1,2,3"], "train.profile_steps"),
    (["train.early_stop_patience=3"], "needs train.keep_best"),
    (["train.export=best"], "needs train.keep_best"),
    (["train.keep_best=validation/loss"], "needs train.eval_every"),
    (["model.remat_policy=some"], "model.remat_policy"),
    (["train.mu_dtype=float16"], "train.mu_dtype"),
])
def test_run_options_are_checked_before_anything_runs(overrides, message):
  with pytest.raises(InputError, match=message):
    override(_config(), overrides).validate()
