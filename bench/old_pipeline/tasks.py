"""The former seqio registrations (per-example tokenizing and masking in Python), kept
only as the reference of `bench/data_pipeline.py`. Task names carry an `old_` prefix."""

from __future__ import annotations

import tensorflow as tf
import seqio

from kmlm_jax.text.vocab import seqio_vocabulary
from old_pipeline import pipeline

KNOWLEDGE = {"old_kmlm_knowledge_cs": "code_switched", "old_kmlm_knowledge_parallel": "parallel",
             "old_kmlm_reasoning": "reasoning"}


def _line_count(pattern: str) -> int:
  return sum(sum(1 for _ in tf.io.gfile.GFile(f, "rb")) for f in tf.io.gfile.glob(pattern))


def register(corpus_dir: str, text_pattern: str, vocab_path: str, languages,
             max_length: int = 128, prixlm_vocab: str | None = None) -> None:
  vocab = seqio_vocabulary(vocab_path)
  flags = seqio.PassThroughVocabulary(2)
  features = {"input_ids": seqio.Feature(vocab, add_eos=False),
              "targets": seqio.Feature(vocab, add_eos=False),
              "loss_mask": seqio.Feature(flags, add_eos=False, dtype="int32"),
              "stream": seqio.Feature(flags, add_eos=False, dtype="int32", rank=0)}
  text = []
  for lang in languages:
    name, pattern = f"old_cc100_{lang}", text_pattern.format(lang=lang)
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=pipeline.NumberedTextLineDataSource({"train": pattern}),
        preprocessors=[pipeline.tokenize_and_mask_text(name, vocab_path, max_length)],
        output_features=features)
    text.append((name, max(1, _line_count(pattern))))
  seqio.MixtureRegistry.remove("old_cc100")
  seqio.MixtureRegistry.add("old_cc100", text)
  for name, stream in KNOWLEDGE.items():
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=pipeline.CorpusDataSource(corpus_dir, stream),
        preprocessors=[pipeline.tokenize_and_mask_sample(name, vocab_path, max_length),
                       pipeline.drop_empty],
        output_features=features)
  if prixlm_vocab:
    pfeatures = {**features, "input_ids": seqio.Feature(seqio_vocabulary(prixlm_vocab),
                                                        add_eos=False),
                 "prefix_mask": seqio.Feature(flags, add_eos=False, dtype="int32")}
    seqio.TaskRegistry.remove("old_prixlm_triples")
    seqio.TaskRegistry.add(
        "old_prixlm_triples", source=pipeline.CorpusDataSource(corpus_dir, "triple"),
        preprocessors=[pipeline.prixlm_sequences("old_prixlm_triples", prixlm_vocab, max_length),
                       pipeline.drop_empty],
        output_features=pfeatures)
