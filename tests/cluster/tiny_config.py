"""The cluster tests' run: tests/training/test_multihost's 1-layer model on the sample's
KMLM-Mix input on 2 devices (2 SLURM tasks of 1 CPU device, or 1 process of 2) split over
the batch, synchronous checkpoints every 2 steps; KMLM_CLUSTER_STEPS steps (60)."""

import dataclasses
import os

from kmlm_jax.config import ExperimentConfig, MeshConfig
from tests.training.test_multihost import real_config


def get_config() -> ExperimentConfig:
  return dataclasses.replace(real_config(int(os.environ.get("KMLM_CLUSTER_STEPS", "60"))),
                             name="cluster", mesh=MeshConfig(shape=(2, 1, 1)))
