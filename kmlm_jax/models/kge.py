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

Lower distance = more plausible. Training is jitted: `steps_per_call`
optimiser steps run inside one `lax.scan`. Evaluation ranks every entity
for each query, filtered (other known true answers skipped), in query
chunks on device.

Shapes: E entities, R relations, k embedding dim, N triples (h, r, t) int.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


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
  steps_per_call: int = 100
  seed: int = 0

  def __post_init__(self):
    if self.model not in ("transe", "rotate"):
      raise ValueError(f"model must be 'transe' or 'rotate', got {self.model!r}")
    if self.norm not in (1, 2):
      raise ValueError(f"norm must be 1 or 2, got {self.norm}")
    if min(self.dim, self.num_negatives, self.batch_size, self.steps_per_call) < 1:
      raise ValueError("dim, num_negatives, batch_size and steps_per_call must be >= 1")


def init_params(config: KGEConfig, num_entities: int, num_relations: int, key) -> dict:
  """{'entity': [E, k] or [E, 2k], 'relation': [R, k]} fp32."""
  ke, kr = jax.random.split(key)
  if config.model == "transe":
    bound = 6.0 / np.sqrt(config.dim)
    return {"entity": jax.random.uniform(ke, (num_entities, config.dim), minval=-bound,
                                         maxval=bound),
            "relation": jax.random.uniform(kr, (num_relations, config.dim), minval=-bound,
                                           maxval=bound)}
  bound = (config.margin + 2.0) / config.dim
  return {"entity": jax.random.uniform(ke, (num_entities, 2 * config.dim), minval=-bound,
                                       maxval=bound),
          "relation": jax.random.uniform(kr, (num_relations, config.dim), minval=-np.pi,
                                         maxval=np.pi)}


def _transe_entities(config: KGEConfig, params):
  e = params["entity"]
  if not config.normalize_entities:
    return e
  return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)


def distance(config: KGEConfig, params: dict, h, r, t) -> jax.Array:
  """d(h, r, t) for broadcastable int index arrays (lower = more plausible)."""
  if config.model == "transe":
    e = _transe_entities(config, params)
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


def _corrupt(key, triples, num_entities: int, num_negatives: int):
  """[B, 3] -> (heads [B, n], tails [B, n]): each negative replaces head or tail."""
  kh, ke = jax.random.split(key)
  b = triples.shape[0]
  replace_head = jax.random.bernoulli(kh, 0.5, (b, num_negatives))
  random = jax.random.randint(ke, (b, num_negatives), 0, num_entities)
  heads = jnp.where(replace_head, random, triples[:, :1])
  tails = jnp.where(replace_head, triples[:, 2:], random)
  return heads, tails


def loss_fn(config: KGEConfig, params, triples, key, num_entities: int):
  """Scalar loss of a [B, 3] batch with `num_negatives` corruptions each."""
  h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
  pos = distance(config, params, h, r, t)  # [B]
  nh, nt = _corrupt(key, triples, num_entities, config.num_negatives)
  neg = distance(config, params, nh, r[:, None], nt)  # [B, n]
  if config.model == "transe":
    return jax.nn.relu(config.margin + pos[:, None] - neg).mean()
  weights = jax.lax.stop_gradient(
      jax.nn.softmax(config.adversarial_temperature * (config.margin - neg), axis=-1))
  pos_term = -jax.nn.log_sigmoid(config.margin - pos)
  neg_term = -(weights * jax.nn.log_sigmoid(neg - config.margin)).sum(-1)
  return (pos_term + neg_term).mean()


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _train_chunk(config: KGEConfig, optimizer, num_entities: int, params, opt_state, triples,
                 key):
  def step(carry, key):
    params, opt_state = carry
    kb, kn = jax.random.split(key)
    batch = triples[jax.random.randint(kb, (config.batch_size,), 0, triples.shape[0])]
    loss, grads = jax.value_and_grad(loss_fn, argnums=1)(config, params, batch, kn,
                                                         num_entities)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  keys = jax.random.split(key, config.steps_per_call)
  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), keys)
  return params, opt_state, losses


def _check_triples(triples, num_entities: int, num_relations: int) -> np.ndarray:
  triples = np.asarray(triples)
  if triples.ndim != 2 or triples.shape[1] != 3 or triples.shape[0] == 0:
    raise ValueError(f"triples must be a non-empty [N, 3] int array; got {triples.shape}")
  if (triples < 0).any() or (triples[:, [0, 2]] >= num_entities).any() or (
      triples[:, 1] >= num_relations).any():
    raise ValueError("triple ids outside [0, num_entities) / [0, num_relations)")
  return triples.astype(np.int32)


def train(config: KGEConfig, triples, num_entities: int, num_relations: int):
  """Trains on [N, 3] (h, r, t) triples; returns (params, losses [steps] numpy)."""
  triples = jnp.asarray(_check_triples(triples, num_entities, num_relations))
  key, init_key = jax.random.split(jax.random.key(config.seed))
  params = init_params(config, num_entities, num_relations, init_key)
  optimizer = optax.adam(config.learning_rate)
  opt_state = optimizer.init(params)
  losses = []
  for _ in range(-(-config.steps // config.steps_per_call)):
    key, sub = jax.random.split(key)
    params, opt_state, chunk = _train_chunk(config, optimizer, num_entities, params, opt_state,
                                            triples, sub)
    losses.append(np.asarray(chunk))
  return params, np.concatenate(losses)[:config.steps]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _all_distances(config: KGEConfig, predict_head: bool, params, queries):
  """[Q, 3] -> [Q, E] distance of every entity in the missing slot."""
  everyone = jnp.arange(params["entity"].shape[0])[None, :]
  h, r, t = queries[:, :1], queries[:, 1:2], queries[:, 2:]
  if predict_head:
    return distance(config, params, everyone, r, t)
  return distance(config, params, h, r, everyone)


def _known_answers(known: np.ndarray, queries: np.ndarray, predict_head: bool,
                   num_relations: int):
  """(query row, entity) pairs of every known answer of each query's (anchor, relation)."""
  anchor_col, answer_col = (2, 0) if predict_head else (0, 2)
  key_known = known[:, anchor_col].astype(np.int64) * num_relations + known[:, 1]
  order = np.argsort(key_known, kind="stable")
  key_known, answers = key_known[order], known[order, answer_col]
  key_query = queries[:, anchor_col].astype(np.int64) * num_relations + queries[:, 1]
  lo = np.searchsorted(key_known, key_query, "left")
  hi = np.searchsorted(key_known, key_query, "right")
  counts = hi - lo
  rows = np.repeat(np.arange(queries.shape[0]), counts)
  index = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(
      lo, counts)
  return rows, answers[index]


def filtered_ranks(config: KGEConfig, params, queries, known, *, predict_head: bool = False,
                   chunk_size: int | None = None) -> np.ndarray:
  """[Q] float filtered rank of the true answer of each query among all entities.

  `queries` [Q, 3] are test triples; the tail (or head) is predicted.
  `known` [M, 3] are all true triples (train + valid + test); those sharing
  the query's (head, relation) (or (relation, tail)) are skipped except the
  query's own answer. Ties: rank = 1 + #better + #tied / 2 (the mean of
  the optimistic and pessimistic rank).
  """
  num_entities, num_relations = params["entity"].shape[0], params["relation"].shape[0]
  queries = _check_triples(queries, num_entities, num_relations)
  known = _check_triples(known, num_entities, num_relations)
  answer_col = 0 if predict_head else 2
  rows, entities = _known_answers(known, queries, predict_head, num_relations)
  width = params["entity"].shape[1]
  chunk = chunk_size or max(1, (1 << 24) // max(1, num_entities * width))
  ranks = np.empty(queries.shape[0])
  for lo in range(0, queries.shape[0], chunk):
    block = queries[lo:lo + chunk]
    padded = np.concatenate([block, np.repeat(block[-1:], chunk - block.shape[0], 0)])
    dist = np.asarray(_all_distances(config, predict_head, params, jnp.asarray(padded)))
    dist = dist[:block.shape[0]]
    filtered = np.zeros(dist.shape, bool)
    sel = (rows >= lo) & (rows < lo + block.shape[0])
    filtered[rows[sel] - lo, entities[sel]] = True
    answer = block[:, answer_col]
    filtered[np.arange(block.shape[0]), answer] = False
    target = dist[np.arange(block.shape[0]), answer][:, None]
    better = ((dist < target) & ~filtered).sum(1)
    tied = ((dist == target) & ~filtered).sum(1) - 1  # minus the answer itself
    ranks[lo:lo + block.shape[0]] = 1 + better + tied / 2
  return ranks
