"""KG-embedding baselines of the Prix-LM paper: TransE and RotatE in JAX.

TransE (Bordes et al., 2013): d(h, r, t) = || h/|h| + r - t/|t| ||_p, with
entity vectors normalised to unit L2 norm inside the score (the paper's
projection step, made differentiable; `normalize_entities=False` scores the
raw vectors, d = ||h + r - t||_p); margin ranking loss
`mean(relu(margin + d(pos) - d(neg)))` over uniformly corrupted heads or
tails.

RotatE (Sun et al., 2019): entities in C^k, relations are rotations
r = exp(i theta); d(h, r, t) = sum_k |h_k r_k - t_k|; self-adversarial
negative sampling loss `-log sigmoid(gamma - d(pos)) - sum_j p_j log
sigmoid(d(neg_j) - gamma)`, p = softmax(alpha * (gamma - d(neg))) without
gradient.

Lower distance = more plausible. Training is a `KGETask` run by the one
trainer (`kmlm_jax.training.trainer`): Adam at a constant learning rate,
[B, 3] triples drawn uniformly on the host each step (numpy, seeded from
`config.seed`), negatives drawn on device from the step's key; the entity
table carries the logical axes ("vocab", "embed"), so a mesh with tensor
or fsdp axes shards it. Evaluation scores every entity for each query in
query chunks on device; ranks, filtering and metrics are
`kmlm_jax.evaluation.metrics`.

Shapes: E entities, R relations, k embedding dim, N triples (h, r, t) int.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kmlm_jax.config import MeshConfig, OptimizerConfig
from kmlm_jax.errors import InputError, NonFiniteLoss
from kmlm_jax.evaluation import metrics
from kmlm_jax.sharding import Partitioner
from kmlm_jax.training.trainer import Task, make_trainer


@dataclasses.dataclass(frozen=True)
class KGEConfig:
  model: str = "transe"  # "transe" | "rotate"
  dim: int = 64  # k (RotatE: complex dimensions, 2k reals per entity)
  margin: float = 1.0  # TransE margin; RotatE gamma
  norm: int = 1  # TransE p
  normalize_entities: bool = True  # TransE: score unit-norm entity vectors
  num_negatives: int = 16
  adversarial_temperature: float = 1.0  # RotatE alpha
  learning_rate: float = 1e-2
  batch_size: int = 256
  steps: int = 1000
  seed: int = 0

  def __post_init__(self):
    if self.model not in ("transe", "rotate"):
      raise InputError(f"model must be 'transe' or 'rotate', got {self.model!r}")
    if self.norm not in (1, 2):
      raise InputError(f"norm must be 1 or 2, got {self.norm}")
    if min(self.dim, self.num_negatives, self.batch_size) < 1:
      raise InputError("dim, num_negatives and batch_size must be >= 1")


def init_params(config: KGEConfig, num_entities: int, num_relations: int, key) -> dict:
  """{'entity': [E, k] or [E, 2k], 'relation': [R, k]} fp32, uniform in [-bound, bound]."""
  ke, kr = jax.random.split(key)
  k = config.dim
  if config.model == "transe":
    width, entity_bound, relation_bound = k, 6.0 / np.sqrt(k), 6.0 / np.sqrt(k)
  else:
    width, entity_bound, relation_bound = 2 * k, (config.margin + 2.0) / k, np.pi
  uniform = lambda key, shape, bound: jax.random.uniform(key, shape, minval=-bound, maxval=bound)
  return {"entity": uniform(ke, (num_entities, width), entity_bound),
          "relation": uniform(kr, (num_relations, k), relation_bound)}


def distance(config: KGEConfig, params: dict, h, r, t) -> jax.Array:
  """d(h, r, t) for broadcastable int index arrays (lower = more plausible)."""
  if config.model == "transe":
    e = params["entity"]
    if config.normalize_entities:
      e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    diff = e[h] + params["relation"][r] - e[t]
    return jnp.abs(diff).sum(-1) if config.norm == 1 else jnp.linalg.norm(diff, axis=-1)
  k = config.dim
  e = params["entity"]
  theta = params["relation"][r]
  hr, hi, tr, ti = e[h][..., :k], e[h][..., k:], e[t][..., :k], e[t][..., k:]
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  re = hr * cos - hi * sin - tr
  im = hr * sin + hi * cos - ti
  return jnp.sqrt(re * re + im * im + 1e-12).sum(-1)


def row_losses(config: KGEConfig, params, triples, key, num_entities: int):
  """[B] loss of each row of a [B, 3] batch with `num_negatives` corruptions each; a
  corruption replaces the head or the tail by a uniformly drawn entity."""
  h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
  pos = distance(config, params, h, r, t)  # [B]
  kh, ke = jax.random.split(key)
  shape = (triples.shape[0], config.num_negatives)
  replace_head = jax.random.bernoulli(kh, 0.5, shape)
  random = jax.random.randint(ke, shape, 0, num_entities)
  neg = distance(config, params, jnp.where(replace_head, random, h[:, None]), r[:, None],
                 jnp.where(replace_head, t[:, None], random))  # [B, n]
  if config.model == "transe":
    return jax.nn.relu(config.margin + pos[:, None] - neg).mean(-1)
  weights = jax.lax.stop_gradient(
      jax.nn.softmax(config.adversarial_temperature * (config.margin - neg), axis=-1))
  pos_term = -jax.nn.log_sigmoid(config.margin - pos)
  neg_term = -(weights * jax.nn.log_sigmoid(neg - config.margin)).sum(-1)
  return pos_term + neg_term


def _check_triples(triples, num_entities: int, num_relations: int) -> np.ndarray:
  triples = np.asarray(triples)
  if triples.ndim != 2 or triples.shape[1] != 3 or triples.shape[0] == 0:
    raise InputError(f"triples must be a non-empty [N, 3] int array; got {triples.shape}")
  if (triples < 0).any() or (triples[:, [0, 2]] >= num_entities).any() or (
      triples[:, 1] >= num_relations).any():
    raise InputError("triple ids outside [0, num_entities) / [0, num_relations)")
  return triples.astype(np.int32)


@dataclasses.dataclass
class KGETask(Task):
  """TransE / RotatE as a `Task`. Batch: {"triples": [B, 3] int32}; the loss is the
  batch mean (row losses summed, divided by the whole batch's B: the context)."""

  config: KGEConfig
  num_entities: int
  num_relations: int

  def init_params(self) -> dict:
    _, init_key = jax.random.split(jax.random.key(self.config.seed))
    return init_params(self.config, self.num_entities, self.num_relations, init_key)

  def abstract_params(self) -> dict:
    axes = {"entity": ("vocab", "embed"), "relation": (None, None)}
    return {name: nnx.Param(value, out_sharding=axes[name], eager_sharding=False)
            for name, value in jax.eval_shape(self.init_params).items()}

  def context(self, batch) -> int:
    return batch["triples"].shape[0]

  def loss_fn(self, params, batch, rng, batch_size):
    rows = row_losses(self.config, params, batch["triples"], rng, self.num_entities)
    return rows.sum() / batch_size, {}


def data_parallel_devices(batch_size: int) -> list[jax.Device]:
  """The first k devices of every process, for the largest k that splits `batch_size` rows
  over them all (k = 1 when the process count does not divide it: `check_batch` says so)."""
  by_host = collections.defaultdict(list)
  for device in jax.devices():
    by_host[device.process_index].append(device)
  local = min(map(len, by_host.values()))
  k = max((k for k in range(1, local + 1) if batch_size % (k * len(by_host)) == 0), default=1)
  return [device for host in sorted(by_host) for device in by_host[host][:k]]


_FETCH_EVERY = 100  # steps between fetches of the losses (one host sync each)
# Steps dispatched ahead of the device at most: with ~64 tiny sharded steps queued,
# XLA:CPU's simulated devices deadlock in an all-reduce rendezvous (aborting after 40 s).
_MAX_AHEAD = 8


def train(config: KGEConfig, triples, num_entities: int, num_relations: int, *,
          partitioner: Partitioner | None = None, progress: bool = True):
  """Trains on [N, 3] (h, r, t) triples; returns (params, losses [steps] numpy).

  `partitioner`: the mesh (default: data parallel, `data_parallel_devices`).
  Raises `NonFiniteLoss` at the first step whose loss, gradient or update is
  not finite (the trainer did not apply it). `progress`: a bar on stderr, moved
  when losses are fetched.
  """
  from kmlm_jax.evaluation import progress as progress_lib
  triples = _check_triples(triples, num_entities, num_relations)
  if partitioner is None:
    partitioner = Partitioner.from_config(MeshConfig(),
                                          data_parallel_devices(config.batch_size))
  partitioner.check_batch(config.batch_size, "batch_size")
  optimizer = OptimizerConfig(learning_rate=config.learning_rate, steps=config.steps,
                              weight_decay=0.0, grad_clip_norm=0.0, schedule="constant")
  trainer = make_trainer(KGETask(config, num_entities, num_relations), partitioner, optimizer,
                         seed=config.seed)
  state = trainer.init_state()
  sampler = np.random.default_rng(config.seed)  # every host draws the global batch
  losses, pending = [], []
  with progress_lib.bar(config.steps, f"training {config.model}", "step",
                        compiling=f"the {config.model} step", disable=not progress) as bar:
    for step in range(config.steps):
      batch = triples[sampler.integers(0, triples.shape[0], config.batch_size)]
      state, step_metrics = trainer.step(state, partitioner.host_rows({"triples": batch}))
      pending.append((step_metrics["loss"], step_metrics["finite"]))
      if len(pending) > _MAX_AHEAD:
        pending[-_MAX_AHEAD - 1][1].block_until_ready()
      if len(pending) == _FETCH_EVERY or step + 1 == config.steps:
        loss, finite = (np.array(x) for x in zip(*jax.device_get(pending)))
        if not finite.all():
          bad = int(np.argmin(finite))
          raise NonFiniteLoss(
              f"KGE {config.model} training: the loss, gradient or update is not finite at step "
              f"{len(losses) + bad + 1} of {config.steps}; lower learning_rate")
        losses.extend(loss)
        bar.update(len(pending))
        pending = []
  return state.params, np.asarray(losses, np.float32)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _all_distances(config: KGEConfig, predict_head: bool, params, queries):
  """[Q, 3] -> [Q, E] distance of every entity in the missing slot."""
  everyone = jnp.arange(params["entity"].shape[0])[None, :]
  h, r, t = queries[:, :1], queries[:, 1:2], queries[:, 2:]
  if predict_head:
    return distance(config, params, everyone, r, t)
  return distance(config, params, h, r, everyone)


def filtered_ranks(config: KGEConfig, params, queries, known, *, predict_head: bool = False,
                   chunk_size: int | None = None, ties: str = "mean") -> np.ndarray:
  """[Q] float filtered rank of the true answer of each query among all entities.

  `queries` [Q, 3] are test triples; the tail (or head) is predicted.
  `known` [M, 3] are all true triples (train + valid + test); those sharing
  the query's (head, relation) (or (relation, tail)) are skipped except the
  query's own answer. Ties: `metrics.ranks` (default "mean": 1 + #better +
  #tied / 2).
  """
  num_entities, num_relations = params["entity"].shape[0], params["relation"].shape[0]
  queries = _check_triples(queries, num_entities, num_relations)
  known = _check_triples(known, num_entities, num_relations)
  answers = queries[:, 0 if predict_head else 2]
  rows, entities = metrics.known_answers(known, queries, predict_head=predict_head)
  width = params["entity"].shape[1]
  chunk = chunk_size or max(1, (1 << 24) // max(1, num_entities * width))
  out = []
  for lo in range(0, queries.shape[0], chunk):
    block = queries[lo:lo + chunk]
    n = block.shape[0]
    padded = np.concatenate([block, np.repeat(block[-1:], chunk - n, 0)])
    dist = np.asarray(_all_distances(config, predict_head, params, jnp.asarray(padded)))[:n]
    a, b = np.searchsorted(rows, [lo, lo + n])  # rows are sorted
    mask = metrics.filter_mask(answers[lo:lo + n], num_entities, rows[a:b] - lo, entities[a:b])
    out.append(metrics.ranks(dist, answers[lo:lo + n], mask, ties=ties, lower_is_better=True))
  return np.concatenate(out) if out else np.zeros(0)
