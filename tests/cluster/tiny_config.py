"""The cluster tests' run: tests/training/test_multihost's 1-layer model on the sample's
KMLM-Mix input, 8 devices (2 SLURM tasks x 4 CPU devices, or 1 process x 8), synchronous
checkpoints every 2 steps; KMLM_CLUSTER_STEPS steps (60)."""

import dataclasses
import os

from kmlm_jax.config import ExperimentConfig
from tests.training.test_multihost import real_config


def get_config() -> ExperimentConfig:
  return dataclasses.replace(real_config(int(os.environ.get("KMLM_CLUSTER_STEPS", "60"))),
                             name="cluster")
