"""Analytic FLOPs of a training step and model FLOPs utilisation (MFU).

Counts multiply-adds as 2 FLOPs, forward + backward as 3x forward (MaxText's
convention), and the MLM head as it is computed: only at the P gathered
positions of each row. Embedding lookups, LayerNorm, softmax and the
optimizer update are not counted.
"""

from __future__ import annotations

from kmlm_jax.config import ModelConfig

# Dense bf16 peak FLOP/s per device (vendor figures).
PEAK_FLOPS = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12,
}


def forward_flops_per_row(c: ModelConfig, length: int, predictions: int) -> float:
  d, f, t = c.hidden_size, c.intermediate_size, length
  projections = 2 * t * d * (4 * d)  # q, k, v, output
  attention = 2 * 2 * t * t * d  # scores and context
  mlp = 2 * 2 * t * d * f
  head = 2 * predictions * (d * d + d * c.vocab_size)
  return c.num_layers * (projections + attention + mlp) + head


def train_flops_per_step(c: ModelConfig, batch: int, length: int, predictions: int) -> float:
  return 3.0 * batch * forward_flops_per_row(c, length, predictions)


def peak_flops(device_kind: str, override: float = 0.0) -> float | None:
  """Peak FLOP/s of a device kind, or None when unknown (CPUs)."""
  if override:
    return override
  matches = [prefix for prefix in PEAK_FLOPS if device_kind.startswith(prefix)]
  return PEAK_FLOPS[max(matches, key=len)] if matches else None  # the most specific kind
