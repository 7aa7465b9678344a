"""KMLM paper run: mbert base kmlm cs (mbert-base, mixture kmlm_cs). See configs/paper.py."""

from configs.paper import paper_run


def get_config():
  return paper_run("mbert_base_kmlm_cs", "mbert-base", "kmlm_cs", "checkpoints/bert-base-multilingual-cased",
                   grad_accum_steps=1, mesh_shape=(-1, 1, 1),
                   # mBERT is trained on Wikipedia text in the paper, with its WordPiece vocabulary.
                   text_pattern="/data/wikipedia/{lang}/*.txt",
                   vocab="checkpoints/bert-base-multilingual-cased/tokenizer")
