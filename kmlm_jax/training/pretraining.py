"""The pretraining objective (KMLM and Prix-LM) as a `Task`.

Batches are packed rows (`kmlm_jax.data.packing.ROW_KEYS`: [B, T] token
arrays and [B, P] gathered loss slots). The attention mask is per packed
segment (`masks.training_mask`): bidirectional for the MLM rows; for Prix-LM
rows causal after the prefix (`model.attention="prefix_causal"`) or fully
causal (`"causal"`, the released Prix-LM's decoder). The loss is
`L_MLM + alpha * (L_K + L_L)` (+ Prix-LM's causal loss), each loss term's
mean NLL taken over the whole batch's loss positions (the `context`), so
accumulated micro-batches add up exactly.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from kmlm_jax.config import ExperimentConfig
from kmlm_jax.models import masks
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.training import losses
from kmlm_jax.training.trainer import Task


def forward(model: Encoder, batch: dict, dropout_rng):
  """(nll [B, P], correct [B, P]) of the gathered MLM head."""
  attention = masks.training_mask(batch["segment_ids"], batch["prefix_mask"] > 0,
                                  model.config.attention)
  out = model(batch["input_ids"], segment_ids=batch["segment_ids"],
              positions=batch.get("positions"), attention=attention, dropout_rng=dropout_rng)
  logits = model.mlm_logits(out.hidden, batch["mlm_positions"])
  return losses.token_nll(logits, batch["mlm_targets"])


@dataclasses.dataclass
class PretrainingTask(Task):
  config: ExperimentConfig

  def __post_init__(self):
    model = nnx.eval_shape(lambda: Encoder(self.config.model, rngs=nnx.Rngs(0)))
    self.graphdef, self.abstract = nnx.split(model, nnx.Param)

  def abstract_params(self):
    return self.abstract

  def init_params(self) -> dict:
    model = Encoder(self.config.model, rngs=nnx.Rngs(self.config.train.seed))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))

  def model(self, params) -> Encoder:
    return nnx.merge(self.graphdef, params)

  def context(self, batch):
    return losses.term_counts(batch["mlm_weights"], batch["mlm_terms"])

  def loss_fn(self, params, batch, rng, counts):
    nll, correct = forward(self.model(params), batch, rng)
    return losses.kmlm_loss(nll, correct, batch["mlm_weights"], batch["mlm_terms"], counts,
                            self.config.train.alpha)

  def report(self, sums, counts):
    return {"count": counts,
            "term_loss": sums["nll_sum"] / jnp.maximum(counts, 1.0),
            "term_accuracy": sums["correct_sum"] / jnp.maximum(counts, 1.0)}
