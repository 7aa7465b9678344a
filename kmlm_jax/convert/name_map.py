"""Declarative name map between transformers tensors and our parameters.

Each `Rule` pairs one transformers tensor name (relative to the encoder
prefix `bert.` / `roberta.`, or absolute for the MLM head) with one of our
parameter paths and a reshape hook. Layer rules contain `{i}` and map L
per-layer tensors onto one stacked parameter [L, ...].
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from kmlm_jax.config import ModelConfig

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class Hook:
  """A reshape in both directions; `to_ours(t, c)` and `to_hf(a, c)` invert each other."""

  to_ours: Callable[[Array, ModelConfig], Array]
  to_hf: Callable[[Array, ModelConfig], Array]


IDENTITY = Hook(lambda t, c: t, lambda a, c: a)
# torch Linear stores [out, in]; we store [in, out].
LINEAR = Hook(lambda t, c: t.T, lambda a, c: a.T)
# [H*K, D] -> [D, H, K] for the query/key/value projections.
TO_HEADS = Hook(lambda t, c: t.T.reshape(c.hidden_size, c.num_heads, c.head_dim),
                lambda a, c: a.reshape(c.hidden_size, c.hidden_size).T)
HEAD_BIAS = Hook(lambda t, c: t.reshape(c.num_heads, c.head_dim),
                 lambda a, c: a.reshape(c.hidden_size))
# [D, H*K] -> [H, K, D] for the attention output projection.
FROM_HEADS = Hook(lambda t, c: t.T.reshape(c.num_heads, c.head_dim, c.hidden_size),
                  lambda a, c: a.reshape(c.hidden_size, c.hidden_size).T)


@dataclasses.dataclass(frozen=True)
class Rule:
  hf: str  # transformers name; `{i}` marks a per-layer tensor
  ours: str  # our parameter path, dot-separated
  hook: Hook = IDENTITY
  encoder: bool = True  # name is relative to the encoder prefix

  @property
  def stacked(self) -> bool:
    return "{i}" in self.hf


EMBEDDING_RULES = (
    Rule("embeddings.word_embeddings.weight", "embeddings.word"),
    Rule("embeddings.position_embeddings.weight", "embeddings.position"),
    Rule("embeddings.token_type_embeddings.weight", "embeddings.token_type"),
    Rule("embeddings.LayerNorm.weight", "embeddings.norm_scale"),
    Rule("embeddings.LayerNorm.bias", "embeddings.norm_bias"),
)

_L = "encoder.layer.{i}."
LAYER_RULES = (
    Rule(_L + "attention.self.query.weight", "layers.q_kernel", TO_HEADS),
    Rule(_L + "attention.self.query.bias", "layers.q_bias", HEAD_BIAS),
    Rule(_L + "attention.self.key.weight", "layers.k_kernel", TO_HEADS),
    Rule(_L + "attention.self.key.bias", "layers.k_bias", HEAD_BIAS),
    Rule(_L + "attention.self.value.weight", "layers.v_kernel", TO_HEADS),
    Rule(_L + "attention.self.value.bias", "layers.v_bias", HEAD_BIAS),
    Rule(_L + "attention.output.dense.weight", "layers.o_kernel", FROM_HEADS),
    Rule(_L + "attention.output.dense.bias", "layers.o_bias"),
    Rule(_L + "attention.output.LayerNorm.weight", "layers.attn_norm_scale"),
    Rule(_L + "attention.output.LayerNorm.bias", "layers.attn_norm_bias"),
    Rule(_L + "intermediate.dense.weight", "layers.mlp_in_kernel", LINEAR),
    Rule(_L + "intermediate.dense.bias", "layers.mlp_in_bias"),
    Rule(_L + "output.dense.weight", "layers.mlp_out_kernel", LINEAR),
    Rule(_L + "output.dense.bias", "layers.mlp_out_bias"),
    Rule(_L + "output.LayerNorm.weight", "layers.mlp_norm_scale"),
    Rule(_L + "output.LayerNorm.bias", "layers.mlp_norm_bias"),
)

POOLER_RULES = (
    Rule("pooler.dense.weight", "pooler.kernel", LINEAR),
    Rule("pooler.dense.bias", "pooler.bias"),
)

# Per flavour: the MLM head's transform prefix, LayerNorm name and output bias.
MLM_HEAD_RULES = {
    flavour: (Rule(t + "dense.weight", "mlm_head.dense_kernel", LINEAR, encoder=False),
              Rule(t + "dense.bias", "mlm_head.dense_bias", encoder=False),
              Rule(t + norm + ".weight", "mlm_head.norm_scale", encoder=False),
              Rule(t + norm + ".bias", "mlm_head.norm_bias", encoder=False),
              Rule(bias, "mlm_head.bias", encoder=False))
    for flavour, t, norm, bias in (
        ("bert", "cls.predictions.transform.", "LayerNorm", "cls.predictions.bias"),
        ("xlmr", "lm_head.", "layer_norm", "lm_head.bias"))
}

# Tensors transformers may store that carry no information of their own: the tied
# decoder (equal to the word embeddings) and its bias alias, each mapped to the parameter
# it must equal; and buffers.
ALIASES = {flavour: {head + "decoder.weight": "embeddings.word",
                     head + "decoder.bias": "mlm_head.bias"}
           for flavour, head in (("bert", "cls.predictions."), ("xlmr", "lm_head."))}
BUFFER_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
# Heads of other pretraining objectives that an MLM conversion drops, by prefix.
DROPPED_PREFIXES = ("cls.seq_relationship.",)

ENCODER_PREFIX = {"bert": "bert.", "xlmr": "roberta."}


def rules_for(config: ModelConfig, with_pooler: bool, with_mlm_head: bool) -> tuple[Rule, ...]:
  rules = EMBEDDING_RULES + LAYER_RULES
  if with_pooler:
    rules += POOLER_RULES
  if with_mlm_head:
    rules += MLM_HEAD_RULES[config.flavour]
  return rules


def hf_name(rule: Rule, prefix: str, layer=None) -> str:
  name = rule.hf.format(i=layer) if rule.stacked else rule.hf
  return prefix + name if rule.encoder else name
