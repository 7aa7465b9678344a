"""KMLM paper run: xlmr base kmlm cs (xlmr-base, mixture kmlm_cs). See configs/paper.py."""

from configs.paper import paper_run


def get_config():
  return paper_run("xlmr_base_kmlm_cs", "xlmr-base", "kmlm_cs", "checkpoints/xlm-roberta-base",
                   grad_accum_steps=1, mesh_shape=(-1, 1, 1))
