"""Sharded forward and gradient on 8 simulated CPU devices equal one device."""

import jax
import numpy as np
import pytest
from flax import nnx

from kmlm_jax import sharding
from kmlm_jax.config import DEFAULT_RULES, MeshConfig, preset
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.config import DataConfig, ExperimentConfig
from kmlm_jax.training.pretraining import PretrainingTask


def _batch(config, batch=8, length=32, predictions=6, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(8, length + 1, batch)
  seg = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  seg[0, 20:] = 2  # one packed row
  ids = np.where(seg > 0, rng.integers(4, config.vocab_size, (batch, length)), 1)
  pos = np.stack([rng.choice(int(n), predictions, replace=False) for n in lengths])
  return dict(input_ids=ids.astype(np.int32), segment_ids=seg,
              mlm_positions=pos.astype(np.int32),
              mlm_targets=rng.integers(4, config.vocab_size, (batch, predictions)).astype(np.int32),
              mlm_weights=(rng.random((batch, predictions)) < 0.8).astype(np.float32),
              prefix_mask=np.zeros_like(seg), mlm_terms=np.zeros((batch, predictions), np.int32))


def _grad_on(mesh_shape, devices, config, batch):
  """The production loss (PretrainingTask) and its gradient, jitted by the Partitioner."""
  partitioner = sharding.Partitioner.from_config(MeshConfig(shape=mesh_shape), devices)
  task = PretrainingTask(ExperimentConfig("t", config, DataConfig(batch_size=8)))
  shardings = partitioner.shardings(task.abstract_params())
  params = jax.device_put(nnx.to_pure_dict(nnx.state(Encoder(config, rngs=nnx.Rngs(0)),
                                                     nnx.Param)), shardings)
  grad = jax.value_and_grad(lambda p, b: task.loss_fn(p, b, None, task.context(b)), has_aux=True)
  (loss, sums), grads = partitioner.jit(grad, out_shardings=(None, shardings))(
      params, partitioner.put_batch(batch))
  acc = float(sums["correct_sum"][0]) / float(batch["mlm_weights"].sum())
  return float(loss), acc, jax.tree.map(np.asarray, grads), (params, partitioner.mesh)


@pytest.fixture(scope="module")
def reference():
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  config = preset("tiny", vocab_size=1000, num_heads=8, intermediate_size=256)
  batch = _batch(config)
  return config, batch, _grad_on((1, 1, 1), jax.devices()[:1], config, batch)


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2)] + [
    pytest.param(shape, marks=pytest.mark.slow)
    for shape in [(8, 1, 1), (1, 2, 4), (1, 1, 8), (2, 4, 1)]])
def test_sharded_matches_single_device(mesh_shape, reference):
  config, batch, (loss1, acc1, grads1, _) = reference
  loss8, acc8, grads8, (params, mesh) = _grad_on(mesh_shape, jax.devices(), config, batch)
  assert abs(loss8 - loss1) <= 1e-5 * abs(loss1)
  assert acc8 == acc1
  flat1, flat8 = jax.tree.leaves(grads1), jax.tree.leaves(grads8)
  for g1, g8 in zip(flat1, flat8):
    np.testing.assert_allclose(g8, g1, atol=1e-5, rtol=1e-4)
  # The parameters really are split: the tensor axis shards the MLP kernel.
  kernel = params["layers"]["mlp_in_kernel"]
  tensor = dict(zip(mesh.axis_names, mesh.devices.shape))["tensor"]
  fsdp = dict(zip(mesh.axis_names, mesh.devices.shape))["fsdp"]
  shard = kernel.addressable_shards[0].data.shape
  assert shard == (config.num_layers, config.hidden_size // fsdp,
                   config.intermediate_size // tensor)


def test_logical_rules_replicate_uneven_dimensions():
  mesh = sharding.make_mesh(MeshConfig(shape=(2, 1, 4)))
  spec = sharding.logical_to_spec(("vocab", "embed"), DEFAULT_RULES, mesh, (250002, 768))
  assert spec == jax.sharding.PartitionSpec(None, None)
  spec = sharding.logical_to_spec(("vocab", "embed"), DEFAULT_RULES, mesh, (250000, 768))
  assert spec == jax.sharding.PartitionSpec("tensor", None)


@pytest.mark.parametrize("shape,message", [((3, 1, 1), "needs 3 devices"),
                                           ((-1, 3, 1), "a multiple of 3 devices"),
                                           ((-1, -1, 1), "at most one")])
def test_mesh_that_does_not_fit_fails_clearly(shape, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(MeshConfig(shape=shape))
