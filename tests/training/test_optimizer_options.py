"""Optimizer options: Adam's first moment in bf16 (state, checkpoint, training) and Adafactor."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from kmlm_jax.config import DataConfig, ExperimentConfig, MeshConfig, TrainConfig, preset
from kmlm_jax.experiment import load_config
from kmlm_jax.training import loop
from kmlm_jax.training.data import SyntheticBatches

ROOT = Path(__file__).resolve().parents[2]


def _config(mesh=(-1, 1, 1), hidden=64, **train):
  return ExperimentConfig(
      "opt", preset("tiny", vocab_size=1000, hidden_size=hidden, num_heads=8,
                    intermediate_size=256, max_position_embeddings=66),
      DataConfig(mixture="synthetic", seq_length=64, max_predictions=16, batch_size=8),
      TrainConfig(**{"steps": 6, "warmup_steps": 2, "learning_rate": 1e-3, "checkpoint_every": 2,
                     "log_every": 1, "async_checkpointing": False, **train}),
      MeshConfig(shape=mesh))


def _dtypes(tree) -> set:
  return {x.dtype for x in jax.tree.leaves(tree)}


@pytest.mark.parametrize("mu_dtype,expected", [("bfloat16", jnp.bfloat16),
                                               ("float32", jnp.float32)])
def test_state_holds_mu_in_mu_dtype(mu_dtype, expected):
  trainer = loop.pretraining_trainer(_config(mu_dtype=mu_dtype))
  state = jax.eval_shape(trainer.init_state)
  assert _dtypes(optax.tree_utils.tree_get(state.opt_state, "mu")) == {jnp.dtype(expected)}
  assert _dtypes(optax.tree_utils.tree_get(state.opt_state, "nu")) == {jnp.dtype(jnp.float32)}


def test_adafactor_statistics_are_sharded_or_replicated():
  """On a 2x2x2 mesh: a moment shaped like its parameter is sharded like it; the factored
  row and column statistics (width 128 factors the matrices) are replicated."""
  trainer = loop.pretraining_trainer(_config(mesh=(2, 2, 2), hidden=128, opt_type="adafactor"))
  shapes = jax.eval_shape(trainer.init_state)
  shardings = trainer.state_shardings.opt_state
  rows = optax.tree_utils.tree_get(shapes.opt_state, "v_row")
  assert rows["layers"]["mlp_in_kernel"].shape == (2, 128)  # factored: [L, D] of [L, D, F]
  for s in jax.tree.leaves(optax.tree_utils.tree_get(shardings, "v_row")):
    assert s.spec == PartitionSpec()
  v = optax.tree_utils.tree_get(shardings, "v")["layers"]["q_kernel"]  # [L, D, H, K]
  assert v.spec != PartitionSpec() and v == trainer.state_shardings.params["layers"]["q_kernel"]


def _source(config, stop_at=None):
  def source(start):
    batches = SyntheticBatches(config.data, config.model.vocab_size, start=start)
    for position in range(start, 10_000):
      if position == stop_at:
        raise RuntimeError("stopped by the test")
      yield next(batches)
  return source


@pytest.mark.slow
def test_checkpoint_holds_bf16_mu(tmp_path):
  config = _config(steps=2, mu_dtype="bfloat16")
  loop.train(config, tmp_path, progress=False)
  arrays = json.loads((tmp_path / "checkpoints/2/checksums/metadata").read_text())["arrays"]
  mu = {p: a["dtype"] for p, a in arrays.items() if "/mu/" in p}
  nu = {p: a["dtype"] for p, a in arrays.items() if "/nu/" in p}
  assert mu and set(mu.values()) == {"bfloat16"}, mu
  assert nu and set(nu.values()) == {"float32"}, nu
  assert arrays["params/layers/q_kernel"]["dtype"] == "float32"


def _losses(overrides, steps=200):
  config = load_config(ROOT / "configs/tiny.py", ["data.mixture=synthetic", "model.vocab_size=4000",
                                                  f"train.steps={steps}", *overrides])
  trainer = loop.pretraining_trainer(config, jax.devices()[:1])
  state = trainer.init_state()
  batches = SyntheticBatches(config.data, config.model.vocab_size)
  losses = []
  for _ in range(steps):
    state, metrics = trainer.step(state, next(batches))
    losses.append(metrics["loss"])
  return np.array(jax.device_get(losses))


@pytest.mark.slow
def test_bf16_mu_trains_tiny_config_within_2_percent_of_fp32():
  fp32 = _losses([])
  bf16 = _losses(["train.mu_dtype=bfloat16"])
  assert fp32[-10:].mean() < 0.8 * fp32[0]  # it trains
  assert abs(bf16[-10:].mean() - fp32[-10:].mean()) <= 0.02 * fp32[-10:].mean(), (
      bf16[-10:].mean(), fp32[-10:].mean())


@pytest.mark.slow
def test_adafactor_trains_checkpoints_and_resumes(tmp_path):
  config = _config(steps=6, opt_type="adafactor")
  whole = loop.train(config, tmp_path / "whole", progress=False, batch_source=_source(config))
  losses = [h["loss"] for h in whole["history"]]
  assert losses[-1] < losses[0], losses
  with pytest.raises(RuntimeError, match="stopped by the test"):  # after the step-4 save
    loop.train(config, tmp_path / "cut", progress=False, batch_source=_source(config, 4))
  resumed = loop.train(config, tmp_path / "cut", resume=True, progress=False,
                       batch_source=_source(config))
  assert resumed["first_step"] == 4
  assert [h["loss"] for h in resumed["history"] if h["step"] > 4] == losses[4:]
