"""KMLM task and mixture definitions (see the package docstring)."""

from __future__ import annotations

import dataclasses
import functools
import os
from importlib import resources
from pathlib import Path

import seqio

from kmlm_jax.kg.sample import KMLM_LANGUAGES
from kmlm_jax.text import pipeline
from kmlm_jax.text.vocab import default_vocab_path, seqio_vocabulary

SAMPLE_CORPUS_VERSION = "3"
KNOWLEDGE_TASKS = {"kmlm_knowledge_cs": "code_switched",
                   "kmlm_knowledge_parallel": "parallel", "kmlm_reasoning": "reasoning"}


@dataclasses.dataclass(frozen=True)
class MixtureRates:
  """Relative sampling rates of the three losses' streams.

  The paper feeds the same number of sequences of each stream per update
  (three forward passes); equal rates approximate that in one mixed batch.
  In kmlm_mix the knowledge rate is split evenly between code-switched and
  parallel sentences.
  """

  mlm: float = 1.0
  knowledge: float = 1.0
  reasoning: float = 1.0


def sample_corpus_dir() -> Path:
  return Path.home() / ".cache" / "kmlm_jax" / "corpora" / f"sample-{SAMPLE_CORPUS_VERSION}"


def ensure_sample_corpus(directory: Path) -> None:
  """Builds the embedded sample corpora into `directory` unless present."""
  if (directory / "manifest.json").exists():
    return
  from kmlm_jax.kg import build
  from kmlm_jax.kg.sample import read_sample
  graph, stats, info = read_sample()
  try:
    build.build(graph, directory, build.BuildOptions(), read_stats=stats, read_info=info,
                source={"sample": "kmlm_jax/kg/data/sample_wikidata.json"})
  except FileExistsError:  # another process built it meanwhile
    if not (directory / "manifest.json").exists():
      raise


def udhr_pattern() -> str:
  data = Path(str(resources.files("kmlm_jax.text").joinpath("data/udhr")))
  return str(data / "{lang}.txt")


def _line_count(pattern: str) -> int:
  import tensorflow as tf
  total = 0
  for f in tf.io.gfile.glob(pattern):
    with tf.io.gfile.GFile(f, "rb") as fh:
      total += sum(1 for _ in fh)
  return total


def register(corpus_dir: str | None = None, text_pattern: str | None = None,
             vocab_path: str | None = None, languages=KMLM_LANGUAGES,
             rates: MixtureRates = MixtureRates(), max_length: int = 128) -> None:
  """(Re-)registers every task and mixture with these data locations."""
  corpus_dir = corpus_dir or os.environ.get("KMLM_CORPUS_DIR")
  prepare = None
  if not corpus_dir:
    corpus_dir = str(sample_corpus_dir())
    prepare = functools.partial(ensure_sample_corpus, Path(corpus_dir))
  text_pattern = text_pattern or os.environ.get("KMLM_TEXT_PATTERN") or udhr_pattern()
  vocab_path = vocab_path or os.environ.get("KMLM_VOCAB") or default_vocab_path()
  vocab = seqio_vocabulary(vocab_path)
  flags = seqio.PassThroughVocabulary(2)
  features = {"input_ids": seqio.Feature(vocab, add_eos=False),
              "targets": seqio.Feature(vocab, add_eos=False),
              "loss_mask": seqio.Feature(flags, add_eos=False, dtype="int32"),
              "stream": seqio.Feature(flags, add_eos=False, dtype="int32", rank=0)}

  text_tasks = []
  for lang in languages:
    name = f"cc100_{lang}"
    pattern = text_pattern.format(lang=lang)
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=pipeline.NumberedTextLineDataSource({"train": pattern}),
        preprocessors=[pipeline.tokenize_and_mask_text(name, vocab_path, max_length)],
        output_features=features)
    text_tasks.append((name, pattern))

  for name, stream in KNOWLEDGE_TASKS.items():
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=pipeline.CorpusDataSource(corpus_dir, stream, prepare),
        preprocessors=[pipeline.tokenize_and_mask_sample(name, vocab_path, max_length),
                       pipeline.drop_empty],
        output_features=features)

  # Text tasks are mixed in proportion to their size, like CC100 sampling.
  seqio.MixtureRegistry.remove("cc100")
  seqio.MixtureRegistry.add("cc100", [(n, max(1, _line_count(p))) for n, p in text_tasks])
  mixtures = {
      "kmlm_cs": [("cc100", rates.mlm), ("kmlm_knowledge_cs", rates.knowledge),
                  ("kmlm_reasoning", rates.reasoning)],
      "kmlm_parallel": [("cc100", rates.mlm), ("kmlm_knowledge_parallel", rates.knowledge),
                        ("kmlm_reasoning", rates.reasoning)],
      "kmlm_mix": [("cc100", rates.mlm), ("kmlm_knowledge_cs", rates.knowledge / 2),
                   ("kmlm_knowledge_parallel", rates.knowledge / 2),
                   ("kmlm_reasoning", rates.reasoning)],
  }
  for name, members in mixtures.items():
    seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, members)
  from tasks.prixlm import register_prixlm
  register_prixlm(corpus_dir, prepare, vocab_path, features, max_length)
