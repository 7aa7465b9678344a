"""KMLM paper run: xlmr base kmlm parallel (xlmr-base, mixture kmlm_parallel). See configs/paper.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from paper import paper_run  # noqa: E402


def get_config():
  return paper_run("xlmr_base_kmlm_parallel", "xlmr-base", "kmlm_parallel", "checkpoints/xlm-roberta-base",
                   grad_accum_steps=1, mesh_shape=(-1, 1, 1))
