"""Remat policies: the same loss and gradients as no remat, and each keeps other residuals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kmlm_jax.config import REMAT_POLICIES, DataConfig, ExperimentConfig, TrainConfig, preset
from kmlm_jax.models.encoder import remat_policy
from kmlm_jax.training.data import SyntheticBatches
from kmlm_jax.training.pretraining import PretrainingTask

DATA = DataConfig(mixture="synthetic", seq_length=32, max_predictions=8, batch_size=4)


def _loss_fn(policy: str):
  """The pretraining loss (with dropout) of the tiny model as a function of its params."""
  model = preset("tiny", dropout_rate=0.1, remat_policy=policy)
  task = PretrainingTask(ExperimentConfig("remat", model, DATA, TrainConfig()))
  batch = jax.tree.map(jnp.asarray, next(SyntheticBatches(DATA, model.vocab_size)))
  counts = task.context(batch)
  return (lambda p: task.loss_fn(p, batch, jax.random.PRNGKey(1), counts)[0]), task


def _residual_bytes(f, params) -> int:
  """Bytes the backward pass keeps from the forward (the vjp's residuals)."""
  vjp = jax.eval_shape(lambda p: jax.vjp(f, p)[1], params)
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(vjp))


@pytest.fixture(scope="module")
def gradients():
  """policy -> (loss, gradients) of the same parameters, computed once each."""
  cache = {}
  params = _loss_fn("none")[1].init_params()

  def get(policy):
    if policy not in cache:
      loss, grads = jax.jit(jax.value_and_grad(_loss_fn(policy)[0]))(params)
      cache[policy] = float(loss), jax.tree.map(np.asarray, grads)
    return cache[policy]

  return get


@pytest.mark.parametrize("policy", [pytest.param("minimal", marks=pytest.mark.slow),
                                    pytest.param("full", marks=pytest.mark.slow),
                                    "save_out_proj"])
def test_policy_gives_the_loss_and_gradients_of_none(gradients, policy):
  loss, grads = gradients(policy)
  ref_loss, ref_grads = gradients("none")
  assert abs(loss - ref_loss) <= 1e-6 * abs(ref_loss)
  scale = max(np.abs(r).max() for r in jax.tree.leaves(ref_grads))
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6 * scale, err_msg=str(path))


def test_policies_keep_different_residuals():
  params = _loss_fn("none")[1].init_params()
  kept = {p: _residual_bytes(_loss_fn(p)[0], params) for p in REMAT_POLICIES}
  # none keeps every activation, minimal the projections and MLP matmuls, save_out_proj
  # one [B, T, D] fp32 per layer more than full (which keeps the layer inputs).
  assert kept["none"] > kept["minimal"] > kept["save_out_proj"] > kept["full"], kept
  model = preset("tiny")
  out_proj = model.num_layers * DATA.batch_size * DATA.seq_length * model.hidden_size * 4
  assert abs(kept["save_out_proj"] - kept["full"] - out_proj) < 0.01 * out_proj, kept


def test_unknown_policy_is_named():
  with pytest.raises(ValueError, match="'some'"):
    remat_policy("some")
