"""KMLM paper run: xlmr base kmlm cs (xlmr-base, mixture kmlm_cs). See configs/paper.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from paper import paper_run  # noqa: E402


def get_config():
  return paper_run("xlmr_base_kmlm_cs", "xlmr-base", "kmlm_cs", "checkpoints/xlm-roberta-base",
                   grad_accum_steps=1, mesh_shape=(-1, 1, 1))
