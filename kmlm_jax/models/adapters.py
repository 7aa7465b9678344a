"""Stacked bottleneck adapters and AdapterFusion on a frozen encoder.

Shapes: B batch, T length, D hidden, L layers, A adapters, R bottleneck
(D // reduction_factor).

Each adapter is a Pfeiffer-style bottleneck (Knowledge adapters eq. 1,
AdapterHub `PfeifferConfig`: reduction factor 16, ReLU) at the output of
each layer's feed-forward block:

  A_a(h) = relu(h W_down[a] + b_down[a]) W_up[a] + b_up[a]

where h [B, T, D] is the feed-forward output after dropout. One adapter
alone gives `h + A_a(h)` (the adapter's residual); the layer then adds its
own residual and LayerNorm as usual, so an adapter with a zero
up-projection leaves the encoder unchanged. (AdapterHub's Pfeiffer config
additionally applies the original LayerNorm before the adapter and again
after it; this placement is AdapterHub's `original_ln_before=False`
variant, written into the export config.)

AdapterFusion (Pfeiffer et al. 2021, AdapterHub "dynamic"): the A adapter
outputs of a layer are keys and values, h is the query and the residual:

  q = h Q + b_q, k_a = A_a(h) K + b_k, v_a = A_a(h) V       (V has no bias)
  out = h + sum_a softmax_a(q . k_a) v_a

with V initialised to the identity. All A adapters are stored stacked
([L, A, ...]) and computed in one einsum.

Parameters carry logical axis names (`layers`, `adapters`, `embed`,
`adapter_bottleneck`); names without a sharding rule are replicated.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from kmlm_jax.config import ModelConfig
from kmlm_jax.models.encoder import Encoder, EncoderOutput
from kmlm_jax.models.layers import param

FUSION = "fusion"


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
  """The adapter set: names in stacking order, bottleneck and init."""

  names: tuple[str, ...] = ("ep", "tp", "es", "ts")
  reduction_factor: int = 16
  # Standard deviation of the normal init of the down/up kernels (AdapterHub
  # "bert" init: 0.02) and of the fusion query/key kernels.
  init_std: float = 0.02
  fusion: bool = True

  def __post_init__(self):
    if not self.names or len(set(self.names)) != len(self.names):
      raise ValueError(f"adapter names must be unique and non-empty, got {self.names}")
    if FUSION in self.names:
      raise ValueError(f"{FUSION!r} cannot be an adapter name")
    if self.reduction_factor < 1:
      raise ValueError(f"reduction_factor must be >= 1, got {self.reduction_factor}")

  def bottleneck(self, hidden_size: int) -> int:
    return max(1, hidden_size // self.reduction_factor)

  def index(self, name: str) -> int:
    try:
      return self.names.index(name)
    except ValueError:
      raise ValueError(f"unknown adapter {name!r}; the adapters are {list(self.names)}") from None

  @property
  def fusion_name(self) -> str:
    """AdapterHub names a fusion by its adapters joined with commas."""
    return ",".join(self.names)


class _Stacked(nnx.Module):
  """`params()`: {name: array} of the module's stacked parameters."""

  def params(self) -> dict[str, jax.Array]:
    return nnx.to_pure_dict(nnx.state(self, nnx.Param))


class KnowledgeAdapters(_Stacked):
  """A adapters in each of L layers, parameters stacked [L, A, ...]."""

  def __init__(self, model: ModelConfig, config: AdapterConfig, *, rngs: nnx.Rngs):
    l, a, d, r = model.num_layers, len(config.names), model.hidden_size, config.bottleneck(
        model.hidden_size)
    normal = jax.nn.initializers.normal(config.init_std)
    zeros = jax.nn.initializers.zeros
    self.down_kernel = param(normal, rngs, (l, a, d, r),
                             ("layers", "adapters", "embed", "adapter_bottleneck"))
    self.down_bias = param(zeros, rngs, (l, a, r), ("layers", "adapters", "adapter_bottleneck"))
    self.up_kernel = param(normal, rngs, (l, a, r, d),
                           ("layers", "adapters", "adapter_bottleneck", "embed"))
    self.up_bias = param(zeros, rngs, (l, a, d), ("layers", "adapters", "embed"))


class AdapterFusion(_Stacked):
  """Per-layer fusion parameters, stacked [L, ...]."""

  def __init__(self, model: ModelConfig, config: AdapterConfig, *, rngs: nnx.Rngs):
    l, d = model.num_layers, model.hidden_size
    normal = jax.nn.initializers.normal(config.init_std)
    zeros = jax.nn.initializers.zeros
    identity = lambda key, shape, dtype: jnp.broadcast_to(jnp.eye(shape[-1], dtype=dtype), shape)
    self.query_kernel = param(normal, rngs, (l, d, d), ("layers", "embed", None))
    self.query_bias = param(zeros, rngs, (l, d), ("layers", None))
    self.key_kernel = param(normal, rngs, (l, d, d), ("layers", "embed", None))
    self.key_bias = param(zeros, rngs, (l, d), ("layers", None))
    self.value_kernel = param(identity, rngs, (l, d, d), ("layers", "embed", None))


# ------------------------------------------------------------ layer functions
# Per-layer parameters (the [L] axis removed); kernels are cast to h's dtype.


def adapter_outputs(h: jax.Array, p: dict) -> jax.Array:
  """A_a(h) of every adapter: h [B, T, D], p with down_kernel [A, D, R] ... -> [B, T, A, D]."""
  dt = h.dtype
  z = jnp.einsum("btd,adr->btar", h, p["down_kernel"].astype(dt)) + p["down_bias"].astype(dt)
  z = jax.nn.relu(z)
  return jnp.einsum("btar,ard->btad", z, p["up_kernel"].astype(dt)) + p["up_bias"].astype(dt)


def single_adapter(h: jax.Array, p: dict) -> jax.Array:
  """h + A(h) for one adapter: p with down_kernel [D, R] ... -> [B, T, D]."""
  dt = h.dtype
  z = jax.nn.relu(h @ p["down_kernel"].astype(dt) + p["down_bias"].astype(dt))
  return h + z @ p["up_kernel"].astype(dt) + p["up_bias"].astype(dt)


def fuse(h: jax.Array, outputs: jax.Array, p: dict) -> jax.Array:
  """AdapterFusion: query/residual h [B, T, D], adapter outputs [B, T, A, D] -> [B, T, D]."""
  dt = h.dtype
  q = h @ p["query_kernel"].astype(dt) + p["query_bias"].astype(dt)
  k = jnp.einsum("btad,de->btae", outputs, p["key_kernel"].astype(dt)) + p["key_bias"].astype(dt)
  v = jnp.einsum("btad,de->btae", outputs, p["value_kernel"].astype(dt))
  scores = jnp.einsum("btd,btad->bta", q, k, preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(scores, axis=-1).astype(dt)
  return h + jnp.einsum("bta,btad->btd", probs, v)


def adapter_hook(adapters: dict, fusion: dict | None, active,
                 names: tuple[str, ...]) -> tuple[dict, Callable] | None:
  """The `(params [L, ...], fn)` the encoder's layer scan takes.

  `active`: None (no adapter), an adapter index (int, static or a traced
  int32 scalar; its slice of the stack is taken with a dynamic index so
  every adapter shares one compiled program), an adapter name (one of
  `names`), or "fusion" (all adapters and the fusion layer).
  """
  if active is None:
    return None
  if isinstance(active, str) and active == FUSION:
    if fusion is None:
      raise ValueError("this model has no fusion layer (AdapterConfig.fusion=False)")
    return ({"adapters": adapters, "fusion": fusion},
            lambda h, p: fuse(h, adapter_outputs(h, p["adapters"]), p["fusion"]))
  if isinstance(active, str):
    active = names.index(active)
  one = {k: jax.lax.dynamic_index_in_dim(v, active, axis=1, keepdims=False)
         for k, v in adapters.items()}
  return one, single_adapter


class AdaptedEncoder(nnx.Module):
  """A (frozen) `Encoder` with stacked knowledge adapters and a fusion layer.

  `encoder` holds the base parameters (the MLM head is not needed and is
  left out), `adapters` the [L, A, ...] stacks, `fusion` the [L, ...]
  fusion parameters.
  """

  def __init__(self, model: ModelConfig, config: AdapterConfig, *, rngs: nnx.Rngs):
    self.model_config = model.replace(use_mlm_head=False)
    self.adapter_config = config
    self.encoder = Encoder(self.model_config, rngs=rngs)
    self.adapters = KnowledgeAdapters(model, config, rngs=rngs)
    self.fusion = AdapterFusion(model, config, rngs=rngs) if config.fusion else None

  def __call__(self, input_ids, *, attention_mask=None, active=None,
               dropout_rng=None) -> EncoderOutput:
    """[B, T] ids -> hidden [B, T, D]; `active` as in `adapter_hook`."""
    fusion = self.fusion.params() if self.fusion is not None else None
    hook = adapter_hook(self.adapters.params(), fusion, active, self.adapter_config.names)
    return self.encoder(input_ids, attention_mask=attention_mask, dropout_rng=dropout_rng,
                        adapter=hook)
