"""Fine-tuning on the one-trainer contract: 8 devices = 1, and divergence stops the run."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from kmlm_jax.config import MeshConfig, preset
from kmlm_jax.errors import NonFiniteLoss
from kmlm_jax.evaluation import finetune
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.models.task_heads import TaskModel

pytestmark = pytest.mark.slow  # each test compiles a model on several meshes

CONFIG = preset("tiny", vocab_size=64, max_position_embeddings=16, num_layers=1)
FT = finetune.FinetuneConfig(steps=3, batch_size=16, learning_rate=1e-3, warmup_steps=1,
                             eval_every=2, seeds=(0,), max_length=8,
                             mesh=MeshConfig(shape=(1, 1, 1)))


def _model_fn(seed, kind="sequence"):
  return TaskModel(Encoder(CONFIG, rngs=nnx.Rngs(seed)), kind, 4, rngs=nnx.Rngs(seed))


def _examples(n, kind="sequence", seed=0):
  """Labels = token (or first token) mod 4; about 20% are IGNORE (they must not count)."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    ids = rng.integers(3, 64, 8).astype(np.int32)
    labels = ids % 4 if kind == "token" else np.int32(ids[0] % 4)
    labels = np.where(rng.random(np.shape(labels)) < 0.2, finetune.IGNORE, labels)
    out.append({"input_ids": ids, "attention_mask": np.ones(8, np.int32), "labels": labels})
  return out


@pytest.mark.parametrize("kind,shape", [("sequence", (8, 1, 1)), ("token", (2, 2, 2))])
def test_8_devices_equal_one(kind, shape):
  """Same losses, accuracies and parameters (labels split unevenly over the shards)."""
  examples = _examples(32, kind)
  keys = tuple(examples[0])
  results = []
  for devices, mesh in ((jax.devices()[:1], (1, 1, 1)), (jax.devices(), shape)):
    config = dataclasses.replace(FT, mesh=MeshConfig(shape=mesh))
    tuner = finetune.make_finetuner(_model_fn(0, kind), config, devices)
    metrics = [tuner.step(b) for b in finetune.batches(examples, 16, 0, keys)]
    metrics.append(tuner.step(next(finetune.batches(examples, 16, 1, keys))))
    assert all(bool(m["finite"]) for m in metrics)
    stats = np.array([[float(m["loss"]), float(m["accuracy"])] for m in metrics])
    results.append((stats, jax.tree.map(np.asarray, tuner.params)))
  (stats, params), (stats1, params1) = results[1], results[0]
  np.testing.assert_allclose(stats, stats1, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               params, params1)


def test_non_finite_loss_stops_the_run():
  """lr=inf: step 1's update is not finite, so it is not applied; the check at the
  dev evaluation (step 3) names step 1."""
  examples = _examples(16)
  score = lambda predicted, dev: float(np.mean(predicted == [e["labels"] for e in dev]))
  config = dataclasses.replace(FT, learning_rate=float("inf"), eval_every=3)
  with pytest.raises(NonFiniteLoss, match=r"seed 0\).* at step 1;"):
    finetune.finetune_and_select(_model_fn, examples, examples, config, 0, score,
                                 jax.devices()[:1])
