"""KMLM paper run: xlmr large kmlm mix (xlmr-large, mixture kmlm_mix). See configs/paper.py."""

from configs.paper import paper_run


def get_config():
  return paper_run("xlmr_large_kmlm_mix", "xlmr-large", "kmlm_mix", "checkpoints/xlm-roberta-large",
                   grad_accum_steps=4, mesh_shape=(1, -1, 1))
