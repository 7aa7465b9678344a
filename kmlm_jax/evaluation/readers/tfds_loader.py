"""Benchmarks from the TensorFlow Datasets catalog, as the file readers' records.

Supported names (with their TFDS config where one is needed):
- NER -> `IOBDataset` (labels in the ClassLabel order, so label ids match
  TFDS): `wikiann/LANG`, `xtreme_pan_x/LANG` (an alias of `wikiann/LANG`:
  XTREME's PAN-X is WikiAnn with the Rahimi et al. splits, which TFDS's
  wikiann uses; the TFDS catalog has no xtreme_pan_x builder),
  `conll2002/es|nl`, `conll2003`;
- sentence-pair classification -> `ClassificationExample`: `xnli` and
  `xtreme_xnli` (one example per language of each record), `paws_x_wiki/LANG`,
  `xtreme_pawsx/LANG`;
- extractive QA -> `QAExample`: `xquad/LANG`.
A version may follow the name (`wikiann/en:1.0.0`). Nothing is downloaded
unless `download=True`: by default the prepared data must be in `data_dir`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from kmlm_jax.evaluation.readers.errors import ReaderError
from kmlm_jax.evaluation.readers.iob import IOBDataset, TaggedSentence, TagError, check_tags

NER = {"wikiann": "tags", "conll2002": "ner", "conll2003": "ner"}
PAIRS = {"paws_x_wiki", "xtreme_pawsx"}
NLI = {"xnli", "xtreme_xnli"}
QA = {"xquad"}
ALIASES = {"xtreme_pan_x": "wikiann"}


@dataclasses.dataclass(frozen=True)
class ClassificationExample:
  """A sentence (pair) and its class; `label` indexes the dataset's label names."""

  id: str
  text: str
  text_pair: str | None
  label: int
  label_name: str
  lang: str | None = None


@dataclasses.dataclass(frozen=True)
class QAExample:
  id: str
  context: str
  question: str
  answers: tuple[str, ...]
  answer_starts: tuple[int, ...]
  lang: str | None = None


def _str(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_tfds(name: str, split: str, data_dir: str | None = None, *, download: bool = False,
              languages: Iterable[str] | None = None, scheme: str = "loose"):
  """Loads a supported TFDS benchmark split (see the module docstring for what comes back).

  `languages` keeps only those languages of a multilingual record (XNLI);
  `scheme` is the IOB check applied to NER tags ("iob2", "iob1", "loose").
  """
  base, _, rest = name.partition("/")
  base, _, version = base.partition(":")
  base = ALIASES.get(base, base)
  if base not in NER and base not in PAIRS | NLI | QA:
    supported = sorted(set(NER) | PAIRS | NLI | QA | set(ALIASES))
    raise ReaderError(f"{name}: not a supported TFDS benchmark (supported: {supported})")
  full = base + (":" + version if version else "") + ("/" + rest if rest else "")
  lang = rest.partition(":")[0] or None
  import tensorflow_datasets as tfds  # deferred: TensorFlow is slow to import

  try:
    ds, info = tfds.load(full, split=split, data_dir=data_dir, download=download, with_info=True)
  except AssertionError as e:  # TFDS's "dataset not found / not prepared"
    raise ReaderError(f"{full}[{split}]: not prepared in data_dir={data_dir!r} "
                      f"(download={download}): {e}") from None
  rows = tfds.as_numpy(ds)
  where = f"{full}[{split}]"
  if base in NER:
    key = NER[base]
    return _ner(rows, info.features[key].feature.names, key, where,
                lang if base != "conll2003" else "en", scheme)
  if base in QA:
    return _qa(rows, where, lang)
  names = info.features["label"].names
  if base in PAIRS:
    return [ClassificationExample(f"{where}/{i}", _str(r["sentence1"]), _str(r["sentence2"]),
                                  int(r["label"]), names[int(r["label"])], lang)
            for i, r in enumerate(rows)]
  return _nli(rows, names, where, None if languages is None else set(languages))


def _ner(rows, names, key, where, lang, scheme) -> IOBDataset:
  sentences = []
  for i, r in enumerate(rows):
    tokens = tuple(_str(t) for t in r["tokens"])
    tags = tuple(names[int(t)] for t in r[key])
    if len(tokens) != len(tags):
      raise ReaderError(f"{where} example {i}: {len(tokens)} tokens but {len(tags)} tags")
    try:
      check_tags(tags, scheme)
    except TagError as e:
      raise ReaderError(f"{where} example {i}, token {e.index}: {e}") from None
    sentences.append(TaggedSentence(tokens, tags, lang))
  return IOBDataset(tuple(sentences), tuple(names))


def _nli(rows, names, where, languages) -> list[ClassificationExample]:
  out = []
  for i, r in enumerate(rows):
    premises = {k: _str(v) for k, v in r["premise"].items()}
    hyp_langs = [_str(v) for v in r["hypothesis"]["language"]]
    hyps = [_str(v) for v in r["hypothesis"]["translation"]]
    if len(hyp_langs) != len(hyps):
      raise ReaderError(f"{where} example {i}: {len(hyp_langs)} hypothesis languages but "
                        f"{len(hyps)} translations")
    label = int(r["label"])
    for lang, hyp in zip(hyp_langs, hyps):
      if languages is not None and lang not in languages:
        continue
      if lang not in premises:
        raise ReaderError(f"{where} example {i}: hypothesis in {lang!r} but no premise in it")
      out.append(ClassificationExample(f"{where}/{i}/{lang}", premises[lang], hyp, label,
                                       names[label], lang))
  return out


def _qa(rows, where, lang) -> list[QAExample]:
  out = []
  for i, r in enumerate(rows):
    texts = tuple(_str(t) for t in r["answers"]["text"])
    starts = tuple(int(s) for s in r["answers"]["answer_start"])
    if len(texts) != len(starts):
      raise ReaderError(f"{where} example {i}: {len(texts)} answers but {len(starts)} starts")
    out.append(QAExample(_str(r["id"]), _str(r["context"]), _str(r["question"]), texts, starts,
                         lang))
  return out
