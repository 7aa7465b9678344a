"""Sentence, reasoning and evaluation-set generators, and the corpus build."""

import collections
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from kmlm_jax.kg import build, evalsets, reasoning, records, sentences
from kmlm_jax.kg.cycles import mine_cycles
from kmlm_jax.kg.graph import ItemRecord, build_graph
from kmlm_jax.kg.sample import read_sample
from kmlm_jax.kg.samples import (KIND_CODE_SWITCHED, KIND_PARALLEL, ROLE_ENTITY, ROLE_LINKER,
                                 ROLE_RELATION, ROLE_TEXT, Sample)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _toy_graph(n=400, seed=0):
  """Random entities with en labels, fr labels for 70%, 0-6 aliases; 2 relations."""
  rng = np.random.default_rng(seed)
  entities = []
  for i in range(n):
    labels = {"en": f"E{i}"}
    aliases = {"en": [f"E{i}-a{k}" for k in range(rng.integers(0, 7))]}
    if rng.random() < 0.7:
      labels["fr"] = f"F{i}"
      aliases["fr"] = [f"F{i}-a{k}" for k in range(rng.integers(0, 4))]
    claims = [("P1" if rng.random() < 0.5 else "P2", f"Q{j + 1}")
              for j in rng.choice(n, 3, replace=False) if j != i]
    entities.append(ItemRecord(f"Q{i + 1}", labels, aliases, claims))
  relations = [ItemRecord("P1", {"en": "rel one", "fr": "rel un"}, {"en": ["r1 alias"]}),
               ItemRecord("P2", {"en": "rel two"}, {})]
  graph, _ = build_graph(entities, relations, ("en", "fr"))
  return graph


@pytest.fixture(scope="module")
def toy():
  return _toy_graph()


def _names_of(sample: Sample):
  return [(s, role, item) for s, role, item in zip(sample.segments, sample.roles, sample.item_ids)
          if role in (ROLE_ENTITY, ROLE_RELATION)]


def _table(graph, role, lang):
  return (graph.entity_names if role == ROLE_ENTITY else graph.relation_names)[lang]


def test_code_switched_follows_the_four_steps(toy):
  samples = list(sentences.generate(toy, KIND_CODE_SWITCHED, seed=3,
                                    options=sentences.SentenceOptions(variants=("label",))))
  assert len(samples) == toy.num_triples  # one pair (en-fr), every triple has en labels
  switched, switchable = 0, 0
  for s in samples:
    assert s.lang == "en-fr" and s.variant == "label"
    assert s.roles == (ROLE_ENTITY, ROLE_LINKER, ROLE_RELATION, ROLE_LINKER, ROLE_ENTITY, ROLE_TEXT)
    h, r, t = toy.triples[s.triple_ids[0]]
    assert s.item_ids == (h, -1, r, -1, t, -1)
    for text, role, item in _names_of(s):
      en, fr = _table(toy, role, "en").labels[item], _table(toy, role, "fr").labels[item]
      assert text in (en, fr)
      if fr:
        switchable += 1
        switched += text == fr
  # Each item switches with p = 0.5 when it has an fr label, never otherwise.
  assert abs(switched / switchable - 0.5) < 0.03, switched / switchable
  assert samples[0].text() == f"{samples[0].segments[0]} <mask> {samples[0].segments[2]} " \
      f"<mask> {samples[0].segments[4]}."


def test_alias_variant_draws_from_the_first_half(toy):
  samples = list(sentences.generate(toy, KIND_CODE_SWITCHED, seed=5,
                                    options=sentences.SentenceOptions(variants=("alias",))))
  seen = collections.defaultdict(set)
  for s in samples:
    for text, role, item in _names_of(s):
      lang = "fr" if text.startswith("F") or text == "rel un" else "en"
      table = _table(toy, role, lang)
      aliases = list(table.aliases_of(item))
      if not aliases:
        assert text == table.labels[item]  # no alias: the label stays
        continue
      pool = aliases[:len(aliases) // 2 + 1] if len(aliases) > 2 else aliases
      assert text in pool, (text, pool)
      seen[(role, item, lang)].add(text)
  # Over many mentions the draw covers the whole pool, not just its first entry.
  assert any(len(v) >= 3 for v in seen.values())


def test_parallel_pairs_are_full_translations(toy):
  samples = list(sentences.generate(toy, KIND_PARALLEL, seed=0,
                                    options=sentences.SentenceOptions(variants=("label",))))
  groups = collections.defaultdict(list)
  for s in samples:
    groups[s.group].append(s)
  fr_ok = sentences.labelled(toy, "fr", toy.triples)
  assert len(groups) == int(fr_ok.sum())  # only triples labelled in fr
  for pair in groups.values():
    en, fr = pair
    assert (en.lang, fr.lang) == ("en", "fr") and en.triple_ids == fr.triple_ids
    for lang, s in (("en", en), ("fr", fr)):
      for text, role, item in _names_of(s):
        assert text == _table(toy, role, lang).labels[item]


def test_chunks_generate_alone(toy, monkeypatch):
  """Any chunk can be generated on its own: the output does not depend on the split."""
  monkeypatch.setattr(sentences, "CHUNK", 100)
  whole = list(sentences.generate(toy, KIND_CODE_SWITCHED, seed=1))
  parts = [s for c in reversed(range(sentences.num_chunks(toy)))
           for s in sentences.code_switched_chunk(toy, c, 1)]
  assert sorted(map(Sample.to_json, whole)) == sorted(map(Sample.to_json, parts))
  assert whole != list(sentences.generate(toy, KIND_CODE_SWITCHED, seed=2))


def test_reasoning_samples(toy):
  cycles = mine_cycles(toy.triples, toy.num_entities, seed=0)
  assert len(cycles.triangles) and len(cycles.diamonds)
  tri = list(reasoning.generate(toy, cycles.triangle_triples[:20], ["en"]))
  dia = list(reasoning.generate(toy, cycles.diamond_triples[:20], ["en", "fr"]))
  for s, k in [(s, 3) for s in tri] + [(s, 5) for s in dia]:
    assert len(set(s.sentence_ids)) == k and s.cycle == {3: 3, 5: 4}[k]
    entity_spans = {}
    for text, role, span, item in zip(s.segments, s.roles, s.span_ids, s.item_ids):
      if role == ROLE_ENTITY:
        # The same entity has the same span id in every sentence, and only it.
        assert entity_spans.setdefault(span, item) == item
        assert text == toy.entity_names[s.lang].labels[item]
    assert len(entity_spans) == s.cycle
  # A diamond is only rendered in languages where all its items are labelled.
  fr = [s for s in dia if s.lang == "fr"]
  assert len(fr) == int(reasoning.cycle_labelled(toy, "fr", cycles.diamond_triples[:20]).sum())


def test_records_round_trip(toy):
  s = next(sentences.generate(toy, KIND_PARALLEL, seed=0))
  assert records.from_example(records.to_example(s)) == s
  assert records.to_example(s) == records.to_example(Sample.from_json(s.to_json()))


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory):
  graph, stats, info = read_sample()
  out = tmp_path_factory.mktemp("kg") / "sample"
  manifest = build.build(graph, out, build.BuildOptions(num_shards=2), read_stats=stats,
                         read_info=info)
  return graph, out, manifest


def _stream_samples(out, stream):
  import tensorflow as tf
  files = sorted(str(p) for p in (out / "corpora" / stream).glob("*.tfrecord"))
  return [records.from_example(r.numpy()) for r in tf.data.TFRecordDataset(files)]


@pytest.mark.slow
def test_held_out_facts_never_reach_pretraining(sample_build):
  graph, out, manifest = sample_build
  held = set(evalsets.pair_keys(graph)[~np.isin(evalsets.pair_keys(graph), [])].tolist())
  lp = [l.split("\t") for l in (out / "eval/lp/en.test.tsv").read_text().splitlines()]
  assert len(lp) == manifest["eval"]["lp_test"]["en"] > 50
  en = graph.entity_names["en"].labels
  test_pairs = {frozenset((h, t)) for h, _, t, _ in lp}
  xlr = [json.loads(l) for l in (out / "eval/xlr/test.jsonl").read_text().splitlines()]
  xlr_rows = {tuple(sorted(x["triples"])) for x in xlr}
  for stream in build.STREAMS:
    samples = _stream_samples(out, stream)
    assert len(samples) == manifest["streams"][stream]["samples"] > 1000
    for s in samples:
      for row in s.triple_ids:
        h, _, t = graph.triples[row]
        assert frozenset((en[h], en[t])) not in test_pairs
      if s.cycle:
        assert tuple(sorted(s.triple_ids)) not in xlr_rows
  del held
  # Every test entity still occurs in pretraining data (link prediction is possible).
  seen = {en[i] for s in _stream_samples(out, "parallel") for i, r in
          zip(s.item_ids, s.roles) if r == ROLE_ENTITY and s.lang == "en"}
  assert {h for h, *_ in lp} | {t for *_, t, _ in lp} <= seen


@pytest.fixture(scope="module")
def sample_plan(sample_build):
  return build.make_plan(sample_build[0], build.BuildOptions(num_shards=2))


def test_validation_pairs_leave_the_corpora(sample_build, sample_plan):
  graph, out, manifest = sample_build
  plan = sample_plan
  held = plan.held
  assert len(held.validation_pairs) == manifest["validation"]["pairs"] > 20
  assert not np.isin(held.validation_pairs, held.held_pairs).any()
  keys = evalsets.pair_keys(graph)
  assert not (plan.keep_triples & plan.validation_triples).any()
  np.testing.assert_array_equal(plan.validation_triples, np.isin(keys, held.validation_pairs))
  # Every entity of a validation pair keeps an edge in the corpora.
  kept = graph.triples[plan.keep_triples]
  ends = set(kept[:, 0].tolist()) | set(kept[:, 2].tolist())
  pairs = held.validation_pairs
  assert set((pairs // graph.num_entities).tolist()) | set((pairs % graph.num_entities)
                                                           .tolist()) <= ends
  for rows, keep, val in ((plan.cycles.triangle_triples, plan.keep_triangles,
                           plan.validation_triangles),
                          (plan.cycles.diamond_triples, plan.keep_diamonds,
                           plan.validation_diamonds)):
    assert val.sum() > 50 and not (keep & val).any()
    on = np.isin(evalsets.pair_keys(graph, rows.reshape(-1)).reshape(rows.shape),
                 held.validation_pairs).any(axis=1)
    assert on[val].all() and not on[keep].any()
  # The evaluation sets do not depend on the validation fraction.
  none = evalsets.EvalOptions(validation_fraction=0.0)
  other = build.make_plan(graph, build.BuildOptions(num_shards=2, evals=none)).held
  np.testing.assert_array_equal(other.held_pairs, held.held_pairs)
  np.testing.assert_array_equal(other.xlr_cycles, held.xlr_cycles)
  assert len(other.validation_pairs) == 0


def _validation_samples(out, stream):
  import tensorflow as tf
  files = sorted(str(p) for p in (out / "validation" / stream).glob("*.tfrecord"))
  return [records.from_example(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def test_validation_samples_render_the_validation_data(sample_build, sample_plan):
  graph, out, manifest = sample_build
  plan, validation = sample_plan, manifest["validation"]
  cycles = {frozenset(c.tolist()) for rows, val in (
      (plan.cycles.triangle_triples, plan.validation_triangles),
      (plan.cycles.diamond_triples, plan.validation_diamonds)) for c in rows[val]}
  for stream in build.STREAMS[:4]:
    samples = _validation_samples(out, stream)
    assert len(samples) == validation["streams"][stream]["samples"] > 100
    for s in samples:
      if stream == "reasoning":
        assert frozenset(s.triple_ids) in cycles
      else:
        assert plan.validation_triples[list(s.triple_ids)].all()
  links = _validation_samples(out, "link")
  dev = {(lang, i) for lang in validation["links"] for i, *_ in
         (json.loads(l).values() for l in
          (out / "eval" / "alignment" / f"{lang}.dev.jsonl").read_text().splitlines())}
  assert len(links) == sum(validation["links"].values()) == len(dev)
  assert {(s.lang.split("-")[1], graph.entity_ids[s.item_ids[0]]) for s in links} == dev


def test_xlr_items(sample_build):
  graph, out, _ = sample_build
  items = [json.loads(l) for split in evalsets.SPLITS
           for l in (out / f"eval/xlr/{split}.jsonl").read_text().splitlines()]
  assert {x["split"] for x in items} == set(evalsets.SPLITS)
  pid = {p: i for i, p in enumerate(graph.relation_ids)}
  for x in items:
    assert len(x["choices"]) == len(set(x["choice_ids"])) == 6
    rows = x["triples"]
    relations = {int(graph.triples[r, 1]) for r in rows}
    assert {pid[c] for c in x["choice_ids"]} >= relations  # the cycle's relations are choices
    answer = pid[x["choice_ids"][x["label"]]]
    assert answer in relations and len(x["context"]) == len(rows) - 1
  en = [x for x in items if x["lang"] == "en"]
  assert en[0]["question"].startswith("What is the relation between")
  # The answer is not always in the same place.
  assert len({x["label"] for x in en}) > 3


@pytest.mark.slow
def test_build_is_deterministic_and_seeded(sample_build, tmp_path):
  graph, out, manifest = sample_build
  again = build.build(graph, tmp_path / "again", build.BuildOptions(num_shards=2))
  files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
  assert files == sorted(p.relative_to(tmp_path / "again") for p in
                         (tmp_path / "again").rglob("*") if p.is_file())
  for f in files:
    if f.name != "manifest.json":  # differs only in the read statistics passed in
      assert (out / f).read_bytes() == (tmp_path / "again" / f).read_bytes(), f
  build.build(graph, tmp_path / "seed1", build.BuildOptions(num_shards=2, seed=1))
  f = "corpora/code_switched/code_switched-00000-of-00002.tfrecord"
  assert (out / f).read_bytes() != (tmp_path / "seed1" / f).read_bytes()


def _cli(*args):
  proc = subprocess.run([sys.executable, "-m", "kmlm_jax.cli", *map(str, args)],
                        capture_output=True, text=True, cwd=ROOT)
  return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.slow
def test_cli_build_sample_and_stats(tmp_path):
  start = time.perf_counter()
  code, out, err = _cli("kg", "build", "--sample", "--out", tmp_path / "kg")
  assert code == 0, err
  assert time.perf_counter() - start < 60
  manifest = json.loads((tmp_path / "kg" / "manifest.json").read_text())
  for key in ("entities", "triples", "cycles3", "cycles4", "skipped"):
    assert isinstance(manifest[key], int)
  assert manifest["entities"] > 800 and manifest["cycles3"] > 1000 and manifest["skipped"] == 0
  assert "| code_switched |" in out and "wrote" in out
  code, out, err = _cli("kg", "stats", tmp_path / "kg")
  assert code == 0 and "| reasoning " in out and "| alignment train " in out


@pytest.mark.slow
def test_cli_bad_input(tmp_path):
  code, _, err = _cli("kg", "build", "--wikidata-dump", tmp_path / "none.json.gz", "--langs",
                      "en", "--out", tmp_path / "o")
  assert code == 2 and "none.json.gz" in err and "not found" in err
  assert not (tmp_path / "o").exists()
  bad = tmp_path / "bad.json"
  bad.write_text('[\n{"type":"item","id":"Q1","labels":{"en":{"language":"en","value":"A"}},'
                 '"claims":{}},\n{not json},\n]\n')
  code, _, err = _cli("kg", "build", "--wikidata-dump", bad, "--langs", "en", "--out",
                      tmp_path / "o")
  assert code == 2 and f"{bad}:3" in err
  code, _, err = _cli("kg", "stats", tmp_path)
  assert code == 2 and "manifest.json" in err
