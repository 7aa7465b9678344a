"""One Flax NNX Transformer encoder with an XLM-R and a BERT flavour.

Post-LayerNorm BERT architecture, as in transformers' `BertModel` and
`XLMRobertaModel`. Shapes: B batch, T length, D hidden, H heads, K head dim,
F intermediate, V vocabulary, L layers, P predictions per sequence.

Parameters are fp32 and carry `logical_axes` metadata; the layers are stored
stacked along a leading `layers` axis and applied with `jax.lax.scan`, so the
compiled program does not grow with depth. `remat_policy` (MaxText's names,
`REMAT_POLICIES`) says what each layer keeps for the backward pass.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from kmlm_jax.config import ModelConfig
from kmlm_jax.models import masks as masks_lib
from kmlm_jax.models.heads import MLMHead
from kmlm_jax.models.layers import dropout, layer_norm, param
from kmlm_jax.sharding import constrain


class Embeddings(nnx.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    d, std = config.hidden_size, config.initializer_range
    normal = jax.nn.initializers.normal(std)
    self.word = param(normal, rngs, (config.vocab_size, d), ("vocab", "embed"))
    self.position = param(normal, rngs, (config.max_position_embeddings, d), (None, "embed"))
    self.token_type = param(normal, rngs, (config.type_vocab_size, d), (None, "embed"))
    self.norm_scale = param(jax.nn.initializers.ones, rngs, (d,), ("embed",))
    self.norm_bias = param(jax.nn.initializers.zeros, rngs, (d,), ("embed",))
    self.config = config

  def __call__(self, input_ids, positions, token_type_ids, dropout_rng):
    """[B, T] ids -> [B, T, D] in the compute dtype."""
    x = (jnp.take(self.word[...], input_ids, axis=0)
         + jnp.take(self.position[...], positions, axis=0)
         + jnp.take(self.token_type[...], token_type_ids, axis=0))
    x = layer_norm(x, self.norm_scale[...], self.norm_bias[...], self.config.layer_norm_eps)
    x = dropout(x, self.config.dropout_rate, dropout_rng)
    return x.astype(self.config.dtype)


# Stacked per-layer parameters: name -> (shape from config, logical axes, init).
def _layer_param_specs(c: ModelConfig):
  d, h, k, f = c.hidden_size, c.num_heads, c.head_dim, c.intermediate_size
  normal = jax.nn.initializers.normal(c.initializer_range)
  zeros, ones = jax.nn.initializers.zeros, jax.nn.initializers.ones
  specs = {}
  for name in ("q", "k", "v"):
    specs[f"{name}_kernel"] = ((d, h, k), ("embed", "heads", "kv"), normal)
    specs[f"{name}_bias"] = ((h, k), ("heads", "kv"), zeros)
  specs.update(
      o_kernel=((h, k, d), ("heads", "kv", "embed"), normal),
      o_bias=((d,), ("embed",), zeros),
      attn_norm_scale=((d,), ("embed",), ones),
      attn_norm_bias=((d,), ("embed",), zeros),
      mlp_in_kernel=((d, f), ("embed", "mlp"), normal),
      mlp_in_bias=((f,), ("mlp",), zeros),
      mlp_out_kernel=((f, d), ("mlp", "embed"), normal),
      mlp_out_bias=((d,), ("embed",), zeros),
      mlp_norm_scale=((d,), ("embed",), ones),
      mlp_norm_bias=((d,), ("embed",), zeros),
  )
  return specs


def compute_layer_params(c: ModelConfig, p: dict) -> dict:
  """Layer parameters as the layer maths reads them: matmul kernels and
  their biases in the compute dtype (a fp32 bias would promote every bf16
  activation and the next matmul back to fp32); LayerNorm parameters fp32."""
  return {n: v if "norm" in n else v.astype(c.dtype) for n, v in p.items()}


def project(p: dict, x: jax.Array, name: str) -> jax.Array:
  """[..., D] -> [..., H, K]: the query, key or value projection `name`."""
  return jnp.einsum("...d,dhk->...hk", x, p[f"{name}_kernel"]) + p[f"{name}_bias"]


def attention_output_and_mlp(c: ModelConfig, p: dict, x: jax.Array, context: jax.Array,
                             rngs=(None, None), adapter=None) -> jax.Array:
  """The rest of a layer after attention: x [B, T, D], context [B, T, H, K] -> [B, T, D].

  Output projection, residual + LayerNorm, MLP, residual + LayerNorm, in the
  compute dtype. `rngs`: dropout keys of the attention output and the MLP
  output (None: no dropout). `adapter`: None or `fn(h) -> h` rewriting the
  MLP output before its residual.
  """
  attn = checkpoint_name(jnp.einsum("...hk,hkd->...d", context, p["o_kernel"]) + p["o_bias"],
                         OUT_PROJ)
  attn = dropout(attn, c.dropout_rate, rngs[0])
  x = layer_norm(x + attn, p["attn_norm_scale"], p["attn_norm_bias"], c.layer_norm_eps)
  x = x.astype(c.dtype)
  h = _activation(c.hidden_act)(jnp.einsum("...d,df->...f", x, p["mlp_in_kernel"])
                                + p["mlp_in_bias"])
  h = constrain(h, ("batch", "length", "mlp"))
  h = jnp.einsum("...f,fd->...d", h, p["mlp_out_kernel"]) + p["mlp_out_bias"]
  h = dropout(h, c.dropout_rate, rngs[1])
  if adapter is not None:
    h = adapter(h)
  x = layer_norm(x + h, p["mlp_norm_scale"], p["mlp_norm_bias"], c.layer_norm_eps)
  return constrain(x.astype(c.dtype), ("batch", "length", "embed"))


# The attention output projection's name for `jax.checkpoint` policies (MaxText's).
OUT_PROJ = "out_proj"


def remat_policy(name: str) -> Callable | None:
  """The `jax.checkpoint` policy of a `ModelConfig.remat_policy` name; None: no remat.

  "full" saves nothing (recomputes the whole layer), "minimal" saves the matmul
  outputs without a batch dimension (the projections and the MLP, not the attention
  scores), "save_out_proj" saves only the attention output projection.
  """
  policies = jax.checkpoint_policies
  table = {"none": None, "full": policies.nothing_saveable,
           "minimal": policies.checkpoint_dots_with_no_batch_dims,
           "save_out_proj": policies.save_only_these_names(OUT_PROJ)}
  if name not in table:
    raise ValueError(f"unknown remat_policy {name!r} (known: {', '.join(table)})")
  return table[name]


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name in ("gelu_new", "gelu_pytorch_tanh"):
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == "relu":
    return jax.nn.relu
  raise ValueError(f"unsupported hidden_act {name!r}")


class TransformerLayers(nnx.Module):
  """All L post-LN Transformer layers, parameters stacked on axis 0."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    for name, (shape, axes, init) in _layer_param_specs(config).items():
      setattr(self, name, param(init, rngs, (config.num_layers, *shape), ("layers", *axes)))

  def params(self) -> dict[str, jax.Array]:
    return {name: getattr(self, name)[...] for name in _layer_param_specs(self.config)}

  def __call__(self, x, attention_bias, dropout_rng, adapter=None):
    """x [B, T, D], attention_bias [B, 1, T, T] -> [B, T, D].

    `adapter`: None, or `(params, fn)` where every leaf of `params` has a
    leading [L] axis and `fn(h, params_l) -> h` rewrites a layer's
    feed-forward output h [B, T, D] (after dropout) before its residual and
    LayerNorm -- the output-adapter position of Houlsby / Pfeiffer adapters
    (see `models/adapters.py`).
    """
    c = self.config
    adapter_params, adapter_fn = adapter if adapter is not None else (None, None)

    def layer(x, scanned):
      p, index, ap = scanned
      p = compute_layer_params(c, p)
      rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, index)
      rngs = [None] * 3 if rng is None else list(jax.random.split(rng, 3))

      q, k, v = (project(p, x, name) for name in ("q", "k", "v"))
      q = constrain(q, ("batch", "length", "heads", "kv"))
      scores = jnp.einsum("bqhk,bshk->bhqs", q, k, preferred_element_type=jnp.float32)
      scores = scores / math.sqrt(c.head_dim) + attention_bias
      probs = jax.nn.softmax(scores, axis=-1)
      probs = dropout(probs, c.attention_dropout_rate, rngs[0]).astype(c.dtype)
      context = jnp.einsum("bhqs,bshk->bqhk", probs, v)
      x = attention_output_and_mlp(
          c, p, x, context, rngs[1:],
          None if adapter_fn is None else lambda h: adapter_fn(h, ap))
      return x, None

    policy = remat_policy(c.remat_policy)
    if policy is not None:  # the scan body already stops CSE; unrolled layers need it
      layer = jax.checkpoint(layer, policy=policy, prevent_cse=not c.scan_layers)
    x, _ = jax.lax.scan(layer, x, (self.params(), jnp.arange(c.num_layers), adapter_params),
                        unroll=not c.scan_layers)
    return x


class Pooler(nnx.Module):
  """BERT pooler: tanh(dense(first token))."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    d = config.hidden_size
    self.kernel = param(jax.nn.initializers.normal(config.initializer_range), rngs, (d, d),
                        ("embed", None))
    self.bias = param(jax.nn.initializers.zeros, rngs, (d,), (None,))

  def __call__(self, hidden):
    """[B, T, D] -> [B, D] fp32."""
    first = hidden[:, 0].astype(jnp.float32)
    return jnp.tanh(first @ self.kernel[...] + self.bias[...])


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class EncoderOutput:
  hidden: jax.Array  # [B, T, D] compute dtype
  pooled: jax.Array | None  # [B, D] fp32, when the config has a pooler


class Encoder(nnx.Module):
  """XLM-R / BERT encoder with an optional pooler and tied MLM head.

  Inputs are [B, T] int32 arrays. `segment_ids` (0 = padding) enable packed
  rows: attention is blocked across segments and default positions restart
  in each segment. Without `segment_ids`, padding is read from
  `attention_mask` or, failing that, from `input_ids == pad_token_id`.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = Embeddings(config, rngs=rngs)
    self.layers = TransformerLayers(config, rngs=rngs)
    self.pooler = Pooler(config, rngs=rngs) if config.use_pooler else None
    self.mlm_head = MLMHead(config, rngs=rngs) if config.use_mlm_head else None

  def __call__(self, input_ids, *, segment_ids=None, positions=None, token_type_ids=None,
               attention_mask=None, attention=None, dropout_rng=None,
               adapter=None) -> EncoderOutput:
    """Returns hidden states [B, T, D] and the pooled output.

    `attention` [B, 1, T, T] bool overrides the segment mask (Prix-LM's
    prefix-causal mask). `dropout_rng=None` means deterministic. `adapter`:
    per-layer output adapters, see `TransformerLayers.__call__`.
    """
    c = self.config
    if segment_ids is None:
      valid = attention_mask if attention_mask is not None else input_ids != c.pad_token_id
      segment_ids = valid.astype(jnp.int32)
    if positions is None:
      positions = masks_lib.default_positions(segment_ids, c.position_offset, c.pad_token_id
                                              if c.flavour == "xlmr" else 0)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if attention is None:
      attention = masks_lib.segment_mask(segment_ids)
    bias = masks_lib.mask_to_bias(attention, jnp.float32)

    rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
    x = self.embeddings(input_ids, positions, token_type_ids, rngs[0])
    x = constrain(x, ("batch", "length", "embed"))
    x = self.layers(x, bias, rngs[1], adapter)
    pooled = self.pooler(x) if self.pooler is not None else None
    return EncoderOutput(hidden=x, pooled=pooled)

  def mlm_logits(self, hidden, mlm_positions=None):
    """MLM logits, fp32: [B, P, V] at `mlm_positions` [B, P], or [B, T, V] if None."""
    if self.mlm_head is None:
      raise ValueError("this model was built without an MLM head (use_mlm_head=False)")
    return self.mlm_head(hidden, self.embeddings.word[...], mlm_positions)
