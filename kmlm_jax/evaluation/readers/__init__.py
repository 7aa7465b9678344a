"""Readers for the official evaluation sets, returning plain dataclasses.

One module per format: `xlr` (KMLM's multiple choice), `cloze` / `xfactr` /
`mlama` (factual probes), `iob` (CoNLL-2002/2003, WikiAnn / PAN-X NER),
`relx` (relation classification), `tfds_loader` (TFDS catalog benchmarks).
Malformed input raises `ReaderError` naming FILE:LINE and the field.
TensorFlow is imported only by `load_tfds`.
"""

from __future__ import annotations

from kmlm_jax.evaluation.readers.cloze import (ClozeFact, ClozeQuery, ClozeTemplate, read_facts,
                                               read_probes, read_templates)
from kmlm_jax.evaluation.readers.errors import ReaderError
from kmlm_jax.evaluation.readers.iob import (IOBDataset, TaggedSentence, TagError, check_tags,
                                             iob1_to_iob2, read_conll)
from kmlm_jax.evaluation.readers.mlama import read_mlama
from kmlm_jax.evaluation.readers.relx import RelxExample, parse_markers, read_relx
from kmlm_jax.evaluation.readers.tfds_loader import ClassificationExample, QAExample, load_tfds
from kmlm_jax.evaluation.readers.xfactr import read_xfactr
from kmlm_jax.evaluation.readers.xlr import XLRItem, read_xlr

__all__ = [
    "ClassificationExample", "ClozeFact", "ClozeQuery", "ClozeTemplate", "IOBDataset", "QAExample",
    "ReaderError", "RelxExample", "TagError", "TaggedSentence", "XLRItem", "check_tags",
    "iob1_to_iob2", "load_tfds", "parse_markers", "read_conll", "read_facts", "read_mlama",
    "read_probes", "read_relx", "read_templates", "read_xfactr", "read_xlr",
]
