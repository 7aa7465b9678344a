"""Alias-replaced samples: every one holds an alias; triples without one are counted."""

import json

import numpy as np
import pytest

from kmlm_jax.kg import build, sentences
from kmlm_jax.kg.sample import read_sample
from kmlm_jax.kg.samples import KIND_CODE_SWITCHED, KIND_PARALLEL, ROLE_ENTITY, ROLE_RELATION
from tests.kg.test_build import _toy_graph


@pytest.fixture(scope="module")
def sample_graph():
  return read_sample()[0]


def _alias_names(graph, sample):
  """How many of the sample's names are aliases of their item in one of its languages."""
  hits = 0
  for text, role, item in zip(sample.segments, sample.roles, sample.item_ids):
    if role not in (ROLE_ENTITY, ROLE_RELATION):
      continue
    tables = graph.entity_names if role == ROLE_ENTITY else graph.relation_names
    hits += any(text in set(tables[lang].aliases_of(item)) for lang in sample.lang.split("-"))
  return hits


def _generate(graph, kind, variants=("label", "alias")):
  counts = {}
  samples = list(sentences.generate(graph, kind, 0, sentences.SentenceOptions(variants=variants),
                                    counts=counts))
  return samples, counts


@pytest.mark.parametrize("kind", [KIND_CODE_SWITCHED, KIND_PARALLEL])
@pytest.mark.parametrize("graph_name", ["toy", "sample"])
def test_no_alias_sample_lacks_an_alias(graph_name, kind, sample_graph):
  graph = sample_graph if graph_name == "sample" else _toy_graph()
  samples, counts = _generate(graph, kind)
  alias = [s for s in samples if s.variant == "alias"]
  label = [s for s in samples if s.variant == "label"]
  assert alias and all(_alias_names(graph, s) >= 1 for s in alias)
  # Every label sample (or parallel pair) has its alias sample unless counted under no_alias.
  per_triple = 2 if kind == KIND_PARALLEL else 1
  assert counts["no_alias"] == (len(label) - len(alias)) // per_triple > 0
  if kind == KIND_PARALLEL:  # pairs stay whole: both sides hold an alias
    groups = {}
    for s in alias:
      groups.setdefault(s.group, []).append(s)
    assert all(len(pair) == 2 for pair in groups.values())


def test_the_sample_counts_en_ja(sample_graph):
  """On the embedded sample no relation has an alias: an en-ja alias sample needs one of
  its two entities to have one in the drawn language."""
  opts = sentences.SentenceOptions(target_langs=("ja",), variants=("alias",))
  counts = {}
  samples = list(sentences.generate(sample_graph, KIND_CODE_SWITCHED, 0, opts, counts=counts))
  assert not any(sample_graph.relation_names[l].alias_counts().any() for l in ("en", "ja"))
  assert len(samples) + counts["no_alias"] == sample_graph.num_triples
  # About a tenth of the 2,334 triples (244 en-ja ones in the default build, seed 0).
  assert 150 < counts["no_alias"] < 350


def test_the_filter_only_drops_samples(sample_graph, monkeypatch):
  """Dropping alias samples consumes no random draw: the output equals the unfiltered
  generator's (every triple written, labels as fallback) less its alias samples that hold
  no alias."""
  kept, _ = _generate(sample_graph, KIND_CODE_SWITCHED)
  monkeypatch.setattr(sentences, "_with_alias",
                      lambda variant, counts, *flags: np.ones(len(flags[0]), bool))
  unfiltered, _ = _generate(sample_graph, KIND_CODE_SWITCHED)
  assert [s for s in unfiltered if s.variant == "label"] == [s for s in kept
                                                              if s.variant == "label"]
  kept_set = set(kept)
  assert kept_set <= set(unfiltered)
  dropped = [s for s in unfiltered if s not in kept_set]
  assert dropped and all(s.variant == "alias" for s in dropped)
  for s in dropped:  # only labels: each name is its item's label in one of the languages
    for text, role, item in zip(s.segments, s.roles, s.item_ids):
      if role in (ROLE_ENTITY, ROLE_RELATION):
        tables = sample_graph.entity_names if role == ROLE_ENTITY else sample_graph.relation_names
        assert text in {tables[lang].labels[item] for lang in s.lang.split("-")}


def test_the_build_manifest_reports_triples_without_an_alias(tmp_path):
  graph = _toy_graph(n=120)
  options = build.BuildOptions(num_shards=1, preview=0)
  manifest = build.build(graph, tmp_path / "kg", options)
  assert json.loads((tmp_path / "kg" / "manifest.json").read_text())["streams"] == \
      manifest["streams"]
  plan = build.make_plan(graph, options)
  for kind in (KIND_CODE_SWITCHED, KIND_PARALLEL):
    for entry, keep in ((manifest["streams"][kind], plan.keep_triples),
                        (manifest["validation"]["streams"][kind], plan.validation_triples)):
      counts = {}
      samples = list(sentences.generate(graph, kind, options.seed, options.sentences, keep,
                                        counts=counts))
      assert entry["samples"] == len(samples)
      assert entry["not_generated"]["no_alias"] == counts["no_alias"]
    assert manifest["streams"][kind]["not_generated"]["no_alias"] > 0
