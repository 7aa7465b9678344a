"""The cluster tests' run: a 1-layer model on the sample's KMLM-Mix input, 8 devices (2 SLURM
tasks x 4 CPU devices, or 1 process x 8), synchronous checkpoints every 2 steps."""

import os

from kmlm_jax.config import DataConfig, ExperimentConfig, MeshConfig, TrainConfig, preset


def get_config() -> ExperimentConfig:
  steps = int(os.environ.get("KMLM_CLUSTER_STEPS", "60"))
  return ExperimentConfig(
      "cluster", preset("tiny", vocab_size=250002, hidden_size=32, num_heads=2,
                        intermediate_size=64, num_layers=1, max_position_embeddings=130),
      DataConfig(mixture="kmlm_mix", seq_length=128, max_predictions=20, batch_size=8,
                 input_shards=8, block_examples=64),
      TrainConfig(steps=steps, warmup_steps=1, learning_rate=1e-3, checkpoint_every=2,
                  log_every=1, async_checkpointing=False),
      MeshConfig(shape=(2, 2, 2)))
