"""KMLM paper run: xlmr base kmlm parallel (xlmr-base, mixture kmlm_parallel). See configs/paper.py."""

from configs.paper import paper_run


def get_config():
  return paper_run("xlmr_base_kmlm_parallel", "xlmr-base", "kmlm_parallel", "checkpoints/xlm-roberta-base",
                   grad_accum_steps=1, mesh_shape=(-1, 1, 1))
