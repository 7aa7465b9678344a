"""TransE / RotatE baselines: they learn small synthetic KGs; filtered ranks vs brute force."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from kmlm_jax.config import MeshConfig
from kmlm_jax.errors import NonFiniteLoss
from kmlm_jax.evaluation.link_prediction import metrics
from kmlm_jax.models import kge
from kmlm_jax.sharding import Partitioner
from tests.training.test_multihost import _free_port


def _typed_kg(seed: int = 0):
  """Relation k links the 10 entities of group 2k to 4 random entities of group 2k + 1.

  Entity types are what TransE captures well; 160 entities, 8 relations.
  """
  rng = np.random.default_rng(seed)
  triples = [(2 * k * 10 + i, k, (2 * k + 1) * 10 + t)
             for k in range(8) for i in range(10) for t in rng.choice(10, 4, replace=False)]
  triples = np.array(triples)
  rng.shuffle(triples)
  return triples, 160, 8


def _chain_kg(seed: int = 0):
  """Relation k links group g to group g + k (10 groups of 10): compositional, RotatE-friendly."""
  rng = np.random.default_rng(seed)
  triples = [(g * 10 + i, k - 1, (g + k) * 10 + t)
             for k in range(1, 5) for g in range(10 - k) for i in range(10)
             for t in rng.choice(10, 2, replace=False)]
  triples = np.array(triples)
  rng.shuffle(triples)
  return triples, 100, 4


def _brute_force_ranks(config, params, queries, known, predict_head):
  """One entity at a time in float64 numpy, Python-set filtering."""
  ent = np.asarray(params["entity"], np.float64)
  rel = np.asarray(params["relation"], np.float64)
  if config.model == "transe":
    ent = ent / np.linalg.norm(ent, axis=-1, keepdims=True)

  def dist(h, r, t):
    if config.model == "transe":
      return np.abs(ent[h] + rel[r] - ent[t]).sum()
    k = config.dim
    hc, tc = ent[h, :k] + 1j * ent[h, k:], ent[t, :k] + 1j * ent[t, k:]
    return np.abs(hc * np.exp(1j * rel[r]) - tc).sum()

  true = {tuple(map(int, x)) for x in known}
  ranks = []
  for h, r, t in queries:
    answer = h if predict_head else t
    target = dist(h, r, t)
    better = tied = 0
    for e in range(ent.shape[0]):
      triple = (e, r, t) if predict_head else (h, r, e)
      if e == answer or triple in true:
        continue
      d = dist(*triple)
      better += d < target
      tied += d == target
    ranks.append(1 + better + tied / 2)
  return np.array(ranks)


@pytest.mark.slow
@pytest.mark.parametrize("model,kg,threshold", [("transe", _typed_kg, 0.8),
                                                ("rotate", _chain_kg, 0.8)])
def test_learns_synthetic_kg(model, kg, threshold):
  triples, num_entities, num_relations = kg()
  test, train = triples[:len(triples) // 10], triples[len(triples) // 10:]
  config = kge.KGEConfig(model=model, dim=32, steps=600, learning_rate=0.01,
                         margin=1.0 if model == "transe" else 6.0)
  params, losses = kge.train(config, train, num_entities, num_relations)
  assert losses.shape == (600,) and losses[-50:].mean() < 0.75 * losses[:50].mean()
  ranks = kge.filtered_ranks(config, params, test, triples)
  hits10 = metrics(ranks)["hits@10"]
  chance = 10 / num_entities
  assert hits10 >= threshold > 5 * chance, (hits10, chance)
  # Untrained embeddings stay near chance.
  untrained = kge.init_params(config, num_entities, num_relations, jax.random.key(1))
  assert metrics(kge.filtered_ranks(config, untrained, test, triples))["hits@10"] < 0.5


@pytest.mark.parametrize("model", ["transe", "rotate"])
@pytest.mark.parametrize("predict_head", [False, True])
def test_filtered_ranks_equal_brute_force(model, predict_head):
  triples, num_entities, num_relations = _typed_kg(1)
  config = kge.KGEConfig(model=model, dim=8, steps=50, margin=2.0)
  params, _ = kge.train(config, triples[20:], num_entities, num_relations)
  queries = triples[:20]
  ranks = kge.filtered_ranks(config, params, queries, triples, predict_head=predict_head,
                             chunk_size=7)  # several chunks, the last one padded
  np.testing.assert_array_equal(
      ranks, _brute_force_ranks(config, params, queries, triples, predict_head))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["transe", "rotate"])
def test_sharded_training_equals_one_device(model):
  """Data parallel (8, 1, 1) and a sharded entity table (1, 2, 4) train as one device."""
  triples, num_entities, num_relations = _typed_kg(2)
  config = kge.KGEConfig(model=model, dim=8, steps=20, batch_size=32, margin=2.0)
  runs = {}
  for shape in [(1, 1, 1), (8, 1, 1), (1, 2, 4)]:
    partitioner = Partitioner.from_config(MeshConfig(shape=shape),
                                          jax.devices()[:int(np.prod(shape))])
    params, losses = kge.train(config, triples, num_entities, num_relations,
                               partitioner=partitioner)
    runs[shape] = jax.tree.map(np.asarray, params), losses
    if shape == (1, 2, 4):  # entities over tensor, embedding dims over fsdp
      assert params["entity"].sharding.spec == PartitionSpec("tensor", "fsdp")
  (params, losses) = runs[(1, 1, 1)]
  assert np.isfinite(losses).all() and losses[-1] < losses[0]
  for shape in [(8, 1, 1), (1, 2, 4)]:
    np.testing.assert_allclose(runs[shape][1], losses, rtol=1e-5, err_msg=str(shape))
    for name in params:
      np.testing.assert_allclose(runs[shape][0][name], params[name], rtol=1e-5, atol=2e-6,
                                 err_msg=f"{shape} {name}")


WORKER = """
import sys
import jax
address, process, out = sys.argv[1:]
if address != "-":
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=address, num_processes=2,
                             process_id=int(process))
import numpy as np
from kmlm_jax.models import kge
from tests.models.test_kge import _typed_kg
triples, num_entities, num_relations = _typed_kg(2)
config = kge.KGEConfig(dim=8, steps=10, batch_size=4, margin=2.0)
np.save(out, kge.train(config, triples, num_entities, num_relations, progress=False)[1])
"""


@pytest.mark.slow
def test_default_mesh_on_two_hosts_equals_one_host(tmp_path):
  """The default mesh takes devices from every host: 2 processes of 4 CPU devices with a
  batch of 4 (2 devices each) train as 1 process of 4 devices."""
  def run(count: int) -> list[np.ndarray]:
    address = f"127.0.0.1:{_free_port()}" if count == 2 else "-"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    outs = [tmp_path / f"losses-{count}-{i}.npy" for i in range(count)]
    logs = [out.with_suffix(".txt") for out in outs]  # files: a full pipe would stall both
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, address, str(i), str(out)],
                                cwd=Path(__file__).resolve().parents[2], env=env,
                                stderr=open(log, "w"))
               for i, (out, log) in enumerate(zip(outs, logs))]
    for w, log in zip(workers, logs):
      w.wait(timeout=300)
      assert w.returncode == 0, log.read_text()[-3000:]
    return [np.load(out) for out in outs]

  (one,), two = run(1), run(2)
  assert np.isfinite(one).all() and len(one) == 10
  for losses in two:
    np.testing.assert_allclose(losses, one, rtol=1e-5)


@pytest.mark.parametrize("learning_rate", [float("inf"), float("nan")])
def test_non_finite_training_stops(learning_rate):
  triples, num_entities, num_relations = _typed_kg()
  config = kge.KGEConfig(steps=5, learning_rate=learning_rate)
  with pytest.raises(NonFiniteLoss, match=r"KGE transe training: .* not finite at step 1 of 5"):
    kge.train(config, triples, num_entities, num_relations)


def test_bad_inputs():
  with pytest.raises(ValueError, match="model"):
    kge.KGEConfig(model="distmult")
  with pytest.raises(ValueError, match="norm"):
    kge.KGEConfig(norm=3)
  config = kge.KGEConfig(steps=1)
  with pytest.raises(ValueError, match=r"\[N, 3\]"):
    kge.train(config, np.zeros((4, 2), int), 5, 2)
  with pytest.raises(ValueError, match="outside"):
    kge.train(config, np.array([[0, 0, 5]]), 5, 2)
