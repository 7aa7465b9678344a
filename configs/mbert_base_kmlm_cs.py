"""KMLM paper run: mbert base kmlm cs (mbert-base, mixture kmlm_cs). See configs/paper.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from paper import paper_run  # noqa: E402


def get_config():
  return paper_run("mbert_base_kmlm_cs", "mbert-base", "kmlm_cs", "checkpoints/bert-base-multilingual-cased",
                   grad_accum_steps=1, mesh_shape=(-1, 1, 1),
                   # mBERT is trained on Wikipedia text in the paper, with its WordPiece vocabulary.
                   text_pattern="/data/wikipedia/{lang}/*.txt",
                   vocab="checkpoints/bert-base-multilingual-cased/tokenizer")
