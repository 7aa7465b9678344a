"""Shared test configs of the training tests."""

from kmlm_jax.config import DataConfig, ExperimentConfig, MeshConfig, TrainConfig, preset


def synthetic_config(name: str = "test", **train) -> ExperimentConfig:
  """A tiny XLM-R-flavour model on synthetic batches: 6 steps, checkpoints every 2."""
  return ExperimentConfig(
      name, preset("tiny", vocab_size=1000, num_heads=8, intermediate_size=256,
                   max_position_embeddings=66),
      DataConfig(mixture="synthetic", seq_length=64, max_predictions=16, batch_size=8),
      TrainConfig(**{"steps": 6, "warmup_steps": 2, "learning_rate": 1e-3, "checkpoint_every": 2,
                     "log_every": 1, "async_checkpointing": False, **train}),
      MeshConfig(shape=(-1, 1, 1)))
