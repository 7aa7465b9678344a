"""KMLM paper run: xlmr large kmlm cs (xlmr-large, mixture kmlm_cs). See configs/paper.py."""

from configs.paper import paper_run


def get_config():
  return paper_run("xlmr_large_kmlm_cs", "xlmr-large", "kmlm_cs", "checkpoints/xlm-roberta-large",
                   grad_accum_steps=4, mesh_shape=(1, -1, 1))
