"""Sentence generation rate: samples per second per stream, on one core.

A synthetic multilingual KG (default 100k entities, 500k triples, 10
languages, 70% of non-English labels present, 0-6 aliases per item) goes
through the same generators as `kmlm-jax kg build`: code-switched and
parallel sentences (label and alias variants) and reasoning samples from
its cycles. Reports samples/s for generation alone and with serialization
to tf.train.Example bytes (what the shards hold).

  python bench/sentences.py [--entities 100000] [--triples 500000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kmlm_jax.kg import reasoning, records, sentences
from kmlm_jax.kg.cycles import mine_cycles
from kmlm_jax.kg.graph import KnowledgeGraph, NameTable
from kmlm_jax.kg.sample import KMLM_LANGUAGES


def synthetic_graph(num_entities: int, num_triples: int, seed: int = 0) -> KnowledgeGraph:
  rng = np.random.default_rng(seed)
  num_relations = 200

  def table(n, prefix, lang, coverage):
    has = rng.random(n) < coverage
    labels = np.where(has, [f"{prefix}{lang}{i}" for i in range(n)], "").astype(object)
    counts = np.where(has, rng.integers(0, 7, n), 0)
    aliases = [[f"{prefix}{lang}{i}~{k}" for k in range(c)] for i, c in enumerate(counts)]
    return NameTable.build(labels, aliases)

  entity_names, relation_names = {}, {}
  for lang in KMLM_LANGUAGES:
    coverage = 1.0 if lang == "en" else 0.7
    entity_names[lang] = table(num_entities, "e", lang, coverage)
    relation_names[lang] = table(num_relations, "r", lang, coverage)
  # Power-law-ish heads and tails so that the graph has cycles.
  ends = (rng.pareto(1.2, (num_triples, 2)) * 50).astype(np.int64) % num_entities
  rel = rng.integers(0, num_relations, num_triples)
  triples = np.unique(np.stack([ends[:, 0], rel, ends[:, 1]], 1).astype(np.int32), axis=0)
  ids = lambda n, p: np.array([f"{p}{i}" for i in range(n)], object)
  return KnowledgeGraph(ids(num_entities, "Q"), ids(num_relations, "P"), KMLM_LANGUAGES,
                        entity_names, relation_names, triples)


def rate(samples_fn, serialize: bool) -> tuple[int, float]:
  start = time.perf_counter()
  n = 0
  for sample in samples_fn():
    if serialize:
      records.to_example(sample)
    n += 1
  return n, n / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--entities", type=int, default=100_000)
  parser.add_argument("--triples", type=int, default=500_000)
  parser.add_argument("--chunks", type=int, default=4, help="triple chunks to time per stream")
  args = parser.parse_args()
  graph = synthetic_graph(args.entities, args.triples)
  cycles = mine_cycles(graph.triples, graph.num_entities, max_diamonds=20_000)
  chunks = list(range(min(args.chunks, sentences.num_chunks(graph))))
  streams = {
      "code_switched": lambda: sentences.generate(graph, "code_switched", 0, chunks=chunks),
      "parallel": lambda: sentences.generate(graph, "parallel", 0, chunks=chunks),
      "reasoning": lambda: reasoning.generate(graph, cycles.diamond_triples[:4096], ["en", "fr"]),
  }
  print(f"graph: {graph.num_entities:,} entities, {graph.num_triples:,} triples, "
        f"{len(graph.languages)} languages; {len(cycles.diamonds):,} diamonds mined")
  print("| stream | samples timed | samples/s (generate) | samples/s (generate + serialize) |")
  print("|---|---|---|---|")
  summary = []
  for name, fn in streams.items():
    n, gen = rate(fn, serialize=False)
    _, ser = rate(fn, serialize=True)
    print(f"| {name} | {n:,} | {gen:,.0f} | {ser:,.0f} |", flush=True)
    summary.append(f"{name}_per_s={gen:.0f} {name}_serialized_per_s={ser:.0f}")
  print(" ".join(summary))


if __name__ == "__main__":
  main()
