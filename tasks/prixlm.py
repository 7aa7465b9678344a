"""Prix-LM task and mixture definitions (see the package docstring)."""

from __future__ import annotations

import seqio

from kmlm_jax.text import pipeline

PRIXLM_TASKS = {"prixlm_triples": "triple", "prixlm_links": "link"}


def register_prixlm(corpus_dir: str, prepare, vocab_path: str, features: dict,
                    max_length: int, rate_triples: float = 1.0, rate_links: float = 1.0) -> None:
  flag = features["loss_mask"]
  features = {**features, "prefix_mask": seqio.Feature(flag.vocabulary, add_eos=False,
                                                       dtype="int32")}
  for name, stream in PRIXLM_TASKS.items():
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=pipeline.CorpusDataSource(corpus_dir, stream, prepare),
        preprocessors=[pipeline.prixlm_sequences(name, vocab_path, max_length),
                       pipeline.drop_empty],
        output_features=features)
  seqio.MixtureRegistry.remove("prixlm")
  seqio.MixtureRegistry.add("prixlm", [("prixlm_triples", rate_triples),
                                       ("prixlm_links", rate_links)])
