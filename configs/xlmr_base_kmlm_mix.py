"""KMLM paper run: xlmr base kmlm mix (xlmr-base, mixture kmlm_mix). See configs/paper.py."""

from configs.paper import paper_run


def get_config():
  return paper_run("xlmr_base_kmlm_mix", "xlmr-base", "kmlm_mix", "checkpoints/xlm-roberta-base",
                   grad_accum_steps=1, mesh_shape=(-1, 1, 1))
