"""KG readers: the Wikidata JSON dump and Prix-LM triples TSV, good and bad input."""

from __future__ import annotations

import bz2
import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from kmlm_jax.kg.errors import KGInputError
from kmlm_jax.kg.triples_tsv import read_triples_tsv, write_entities_tsv, write_triples_tsv
from kmlm_jax.kg.wikidata import check_languages, read_wikidata_dump

FIXTURE = Path(__file__).parents[1] / "fixtures" / "wikidata" / "small_dump.json"
LANGS = ["en", "fr", "de", "ja", "zh"]

# Expected tables, written by hand from the fixture.
ENTITY_IDS = ["Q42", "Q5", "Q145", "Q84", "Q350", "Q515", "Q46"]
# P19 and P1376 have no property record in the dump; P18 is never item-valued.
RELATION_IDS = ["P31", "P27", "P19", "P36", "P30", "P17", "P1376"]
ENTITY_LABELS = {
    "en": ["Douglas Adams", "human", "United Kingdom", "London", "Cambridge", "city", "Europe"],
    "fr": ["Douglas Adams", "être humain", "Royaume-Uni", "Londres", "Cambridge", "ville",
           "Europe"],
    "de": ["Douglas Adams", "Mensch", "Vereinigtes Königreich", "London", "Cambridge", "Stadt",
           "Europa"],
    "ja": ["ダグラス・アダムズ", "ヒト", "イギリス", "ロンドン", "ケンブリッジ", "都市", "ヨーロッパ"],
    # Q5 has only a zh-hans label: variants are not merged into zh.
    "zh": ["道格拉斯·亚当斯", "", "英国", "伦敦", "剑桥", "城市", "欧洲"],
}
ENTITY_ALIASES = {
    "en": {"Q42": ["Douglas Noël Adams", "Douglas Noel Adams", "DNA"],
           "Q5": ["person", "people", "human being"],
           "Q145": ["UK", "U.K."],  # the label and a repeat are dropped
           "Q84": ["London, UK"], "Q515": ["town", "cities"]},
    "fr": {"Q42": ["Douglas Noël Adams"], "Q84": ["Londres, Royaume-Uni"]},
    "de": {"Q5": ["Menschen"]},
    "ja": {"Q145": ["英国", "連合王国"]},
    "zh": {},
}
RELATION_LABELS = {
    "en": ["instance of", "country of citizenship", "", "capital", "continent", "country", ""],
    "fr": ["nature de l'élément", "pays de nationalité", "", "capitale", "continent", "pays", ""],
    "de": ["ist ein(e)", "Staatsangehörigkeit", "", "Hauptstadt", "Kontinent", "Staat", ""],
    "ja": ["分類", "国籍", "", "首都", "大陸", "国", ""],
    "zh": ["隶属于", "国籍", "", "首都", "大洲", "国家", ""],
}
RELATION_ALIASES = {"en": {"P31": ["is a", "is an"], "P17": ["sovereign state"]},
                    "fr": {"P31": ["est un"]}, "de": {"P36": ["Hauptort"]}, "ja": {}, "zh": {}}
# Not triples: qualifiers (Q42 P642 Q350), references (P248 Q84), the deprecated
# Q350 P131 Q84, claims on properties (P31 P1629 Q515), the no-label Q4115189,
# property-valued P1687, somevalue/novalue snaks, dangling targets.
TRIPLES = {
    ("Q42", "P31", "Q5"), ("Q42", "P27", "Q145"), ("Q42", "P19", "Q350"),
    ("Q145", "P36", "Q84"), ("Q145", "P30", "Q46"), ("Q145", "P17", "Q145"),
    ("Q84", "P17", "Q145"),  # numeric-id only value
    ("Q84", "P31", "Q515"),  # twice in the dump
    ("Q84", "P1376", "Q145"),
    ("Q350", "P17", "Q145"), ("Q350", "P31", "Q515"),
}


def id_triples(graph) -> set[tuple[str, str, str]]:
  e, r = graph.entity_ids, graph.relation_ids
  return {(e[h], r[p], e[t]) for h, p, t in graph.triples.tolist()}


def alias_dict(table, ids) -> dict[str, list[str]]:
  return {ids[i]: list(table.aliases_of(i)) for i in range(len(ids)) if table.alias_counts()[i]}


def write_lines(path: Path, lines: list[str]) -> Path:
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def fixture_lines() -> list[str]:
  return FIXTURE.read_text(encoding="utf-8").splitlines()


def read(path, **kw):
  return read_wikidata_dump(path, LANGS, **kw)


# ----------------------------------------------------------------- wikidata: good input

def test_fixture_parses_to_expected_tables():
  graph, stats, info = read(FIXTURE)
  assert list(graph.entity_ids) == ENTITY_IDS
  assert list(graph.relation_ids) == RELATION_IDS
  assert graph.languages == tuple(LANGS)
  for lang in LANGS:
    assert list(graph.entity_names[lang].labels) == ENTITY_LABELS[lang], lang
    assert alias_dict(graph.entity_names[lang], ENTITY_IDS) == ENTITY_ALIASES[lang], lang
    assert list(graph.relation_names[lang].labels) == RELATION_LABELS[lang], lang
    assert alias_dict(graph.relation_names[lang], RELATION_IDS) == RELATION_ALIASES[lang], lang
  assert id_triples(graph) == TRIPLES
  assert graph.num_triples == len(TRIPLES)
  assert np.array_equal(graph.triples, np.unique(graph.triples, axis=0))
  assert stats.as_dict()["skipped_by_reason"] == {"no_label": 1, "unused_property": 1}
  assert (stats.records_read, stats.records_kept) == (14, 12)
  assert stats.examples["no_label"] == [f"{FIXTURE}:9"]
  assert stats.examples["unused_property"] == [f"{FIXTURE}:14"]  # P18
  assert info["dangling_triples"] == 6
  assert info["duplicate_triples"] == 1
  assert info["relations_without_record"] == ["P19", "P1376"]
  assert info["format"] == "json-array" and info["compression"] is None
  assert info["claims"]["deprecated"] == 1 and info["claims"]["somevalue_novalue"] == 3


@pytest.mark.parametrize("suffix,opener", [(".gz", gzip.open), (".bz2", bz2.open)])
def test_compressed_dump_parses_identically(tmp_path, suffix, opener):
  path = tmp_path / f"dump.json{suffix}"
  with opener(path, "wb") as f:
    f.write(FIXTURE.read_bytes())
  graph, stats, info = read(path)
  plain, plain_stats, _ = read(FIXTURE)
  assert graph.fingerprint() == plain.fingerprint()
  assert stats.as_dict()["skipped_by_reason"] == plain_stats.as_dict()["skipped_by_reason"]
  assert info["compression"] == {".gz": "gzip", ".bz2": "bz2"}[suffix]


def test_json_lines_dump_parses_identically(tmp_path):
  lines = [l.rstrip(",") for l in fixture_lines()[1:-1]]
  graph, _, info = read(write_lines(tmp_path / "dump.jsonl", lines))
  assert graph.fingerprint() == read(FIXTURE)[0].fingerprint()
  assert info["format"] == "json-lines"


def test_entity_whitelist_filters(tmp_path):
  # Wikidata5M alias-file layout: id, then tab-separated names.
  wl = write_lines(tmp_path / "entities.txt", ["Q42\tDouglas Adams\tDNA", "Q5", "", "Q145", "Q350"])
  graph, stats, _ = read(FIXTURE, entity_whitelist=wl)
  assert list(graph.entity_ids) == ["Q42", "Q5", "Q145", "Q350"]
  assert list(graph.relation_ids) == ["P31", "P27", "P19", "P17"]
  assert id_triples(graph) == {("Q42", "P31", "Q5"), ("Q42", "P27", "Q145"), ("Q42", "P19", "Q350"),
                               ("Q145", "P17", "Q145"), ("Q350", "P17", "Q145")}
  assert dict(stats.skipped) == {"not_in_whitelist": 4, "unused_property": 3}
  assert stats.records_read == 14 and stats.records_kept == 7


def test_relation_whitelist_filters(tmp_path):
  wl = write_lines(tmp_path / "relations.txt", ["P31", "P17"])
  graph, stats, info = read(FIXTURE, relation_whitelist=wl)
  assert list(graph.entity_ids) == ENTITY_IDS
  assert list(graph.relation_ids) == ["P31", "P17"]
  assert id_triples(graph) == {t for t in TRIPLES if t[1] in ("P31", "P17")}
  assert dict(stats.skipped) == {"no_label": 1, "not_in_whitelist": 4}
  assert info["relations_without_record"] == []


def test_max_entities_stops_early():
  graph, stats, info = read(FIXTURE, max_entities=3)
  assert list(graph.entity_ids) == ["Q42", "Q5", "Q145"]
  assert info["stopped_early"]
  # The property records come later in the file: none was seen.
  assert info["relations_without_record"] == list(graph.relation_ids)
  stats.check()


def test_progress_bar_runs(tmp_path):
  path = tmp_path / "dump.json.gz"
  with gzip.open(path, "wb") as f:
    f.write(FIXTURE.read_bytes())
  assert read(path, progress=True)[0].num_entities == len(ENTITY_IDS)


# ----------------------------------------------------------------- wikidata: bad input

@pytest.mark.parametrize("suffix,opener", [(".gz", gzip.open), (".bz2", bz2.open)])
def test_truncated_compressed_dump_is_an_error(tmp_path, suffix, opener):
  full = tmp_path / f"full.json{suffix}"
  with opener(full, "wb") as f:
    f.write(FIXTURE.read_bytes())
  cut = tmp_path / f"cut.json{suffix}"
  cut.write_bytes(full.read_bytes()[:len(full.read_bytes()) // 2])
  for skip in (False, True):
    with pytest.raises(KGInputError, match=re.escape(str(cut)) + ".*truncated or corrupt"):
      read(cut, skip_bad_records=skip)


def test_plain_dump_without_closing_bracket_is_an_error(tmp_path):
  path = write_lines(tmp_path / "cut.json", fixture_lines()[:5])
  with pytest.raises(KGInputError, match=re.escape(str(path)) + ".*no closing"):
    read(path)


def test_malformed_json_line(tmp_path):
  lines = fixture_lines()
  lines[4] = lines[4][:200] + ","  # Q84, cut mid-record
  path = write_lines(tmp_path / "dump.json", lines)
  with pytest.raises(KGInputError, match=re.escape(f"{path}:5: malformed JSON")):
    read(path)
  graph, stats, _ = read(path, skip_bad_records=True)
  assert "Q84" not in graph.entity_ids and graph.num_entities == len(ENTITY_IDS) - 1
  assert stats.skipped["malformed_json"] == 1
  assert stats.examples["malformed_json"] == [f"{path}:5"]
  assert stats.records_read == stats.records_kept + stats.num_skipped == 14


@pytest.mark.parametrize("record", ['{"type":"item","labels":{}},', "42,", '["Q1"],'])
def test_record_without_id(tmp_path, record):
  lines = fixture_lines()
  path = write_lines(tmp_path / "dump.json", lines[:2] + [record] + lines[2:])
  with pytest.raises(KGInputError, match=re.escape(f"{path}:3")):
    read(path)
  _, stats, _ = read(path, skip_bad_records=True)
  assert stats.skipped["missing_id"] == 1
  stats.check()


def test_malformed_claims_name_the_field(tmp_path):
  lines = fixture_lines()
  lines[2] = lines[2].replace('"mainsnak":', '"mainsnake":', 1)  # Q5's first statement
  path = write_lines(tmp_path / "dump.json", lines)
  with pytest.raises(KGInputError, match=re.escape(f"{path}:3: field 'claims.P279'")):
    read(path)
  assert read(path, skip_bad_records=True)[1].skipped["malformed_field"] == 1


def test_duplicate_entity_id(tmp_path):
  lines = fixture_lines()
  path = write_lines(tmp_path / "dump.json", lines[:3] + [lines[2]] + lines[3:])  # Q5 twice
  with pytest.raises(KGInputError, match=re.escape(f"{path}:4: field 'id'") + ".*Q5"):
    read(path)
  graph, stats, _ = read(path, skip_bad_records=True)
  assert list(graph.entity_ids) == ENTITY_IDS
  assert stats.skipped["duplicate_id"] == 1 and stats.records_read == 15


def test_no_label_is_always_a_counted_skip():
  graph, stats, _ = read(FIXTURE, skip_bad_records=False)
  assert "Q4115189" not in graph.entity_ids
  assert stats.skipped["no_label"] == 1
  # The sandbox item has only 'it' and 'nl' labels: asking for 'it' flips the picture.
  graph, stats, _ = read_wikidata_dump(FIXTURE, ["it"])
  assert list(graph.entity_ids) == ["Q4115189"]
  assert stats.skipped["no_label"] == len(ENTITY_IDS)


def test_unknown_language_codes_are_listed():
  with pytest.raises(KGInputError) as err:
    read_wikidata_dump(FIXTURE, ["en", "xx-bogus", "EN", "zh_Hans"])
  message = str(err.value)
  assert "'xx-bogus'" in message and "'EN' (did you mean 'en'?)" in message
  assert "'zh_Hans' (did you mean 'zh-hans'?)" in message
  assert check_languages(["en", "zh-hans", "zh-cn", "sr-el", "mul", "en", "yue"]) == (
      "en", "zh-hans", "zh-cn", "sr-el", "mul", "yue")
  assert check_languages(["qq"], extra_codes=["qq"]) == ("qq",)


@pytest.mark.parametrize("kind", ["entity_whitelist", "relation_whitelist"])
def test_bad_whitelist_files(tmp_path, kind):
  missing = tmp_path / "missing.txt"
  with pytest.raises(KGInputError, match=re.escape(str(missing)) + ".*not found"):
    read(FIXTURE, **{kind: missing})
  empty = write_lines(tmp_path / "empty.txt", ["", "# only a comment"])
  with pytest.raises(KGInputError, match=re.escape(str(empty)) + ".*no ids"):
    read(FIXTURE, **{kind: empty})
  good, wrong = ("Q42", "P31") if kind == "entity_whitelist" else ("P31", "Q42")
  bad = write_lines(tmp_path / "bad.txt", [good, wrong])
  with pytest.raises(KGInputError, match=re.escape(f"{bad}:2") + ".*'" + wrong):
    read(FIXTURE, **{kind: bad})


@pytest.mark.parametrize("content", [b"", b"[\n]\n", b"\n\n"])
def test_empty_dump_is_an_error(tmp_path, content):
  path = tmp_path / "dump.json"
  path.write_bytes(content)
  with pytest.raises(KGInputError, match=re.escape(str(path)) + ".*no entity records"):
    read(path)


def test_missing_or_misnamed_dump(tmp_path):
  with pytest.raises(KGInputError, match="not found"):
    read(tmp_path / "nope.json.gz")
  misnamed = tmp_path / "dump.json"
  with gzip.open(misnamed, "wb") as f:
    f.write(FIXTURE.read_bytes())
  with pytest.raises(KGInputError, match="gzip data"):
    read(misnamed)
  fake = tmp_path / "dump.json.bz2"
  shutil.copy(FIXTURE, fake)
  with pytest.raises(KGInputError, match="not bz2 data"):
    read(fake)


# ----------------------------------------------------------------- triples TSV

TSV_TRIPLES = ["Berlin\tcountry\tGermany\ten", "Germany\tcapital\tBerlin\ten",
               "Berlin\tpays\tAllemagne\tfr", "Berlin\tcountry\tGermany\ten"]


def test_triples_tsv_parses(tmp_path):
  triples = write_lines(tmp_path / "train.tsv", TSV_TRIPLES)
  entities = write_lines(tmp_path / "entities.tsv", ["Paris\tfr", "Berlin\ten", "Paris\tfr"])
  graph, stats, info = read_triples_tsv(triples, entities_path=entities)
  assert list(graph.entity_ids) == ["fr:Paris", "en:Berlin", "en:Germany", "fr:Berlin",
                                    "fr:Allemagne"]
  assert list(graph.relation_ids) == ["en:country", "en:capital", "fr:pays"]
  assert graph.languages == ("fr", "en")
  assert list(graph.entity_names["en"].labels) == ["", "Berlin", "Germany", "", ""]
  assert list(graph.entity_names["fr"].labels) == ["Paris", "", "", "Berlin", "Allemagne"]
  assert id_triples(graph) == {("en:Berlin", "en:country", "en:Germany"),
                               ("en:Germany", "en:capital", "en:Berlin"),
                               ("fr:Berlin", "fr:pays", "fr:Allemagne")}
  assert info["duplicate_triples"] == 1 and info["duplicate_entity_lines"] == 1
  assert info["entities_not_in_entity_list"] == 3
  assert (stats.records_read, stats.records_kept) == (7, 7)


def test_triples_tsv_round_trip(tmp_path):
  graph = read_triples_tsv(write_lines(tmp_path / "in.tsv", TSV_TRIPLES), languages=["en"],
                           skip_bad_records=True)[0]
  assert write_triples_tsv(graph, tmp_path / "out.tsv", "en") == 2
  assert write_entities_tsv(graph, tmp_path / "ent.tsv", "en") == 2
  again = read_triples_tsv(tmp_path / "out.tsv", entities_path=tmp_path / "ent.tsv")[0]
  assert again.fingerprint() == graph.fingerprint()


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_wikidata_graph_exports_to_tsv_and_back(tmp_path, lang):
  graph = read(FIXTURE)[0]
  names = lambda g, l: {(g.entity_names[l].labels[h], g.relation_names[l].labels[r],
                         g.entity_names[l].labels[t]) for h, r, t in g.triples.tolist()}
  expected = {t for t in names(graph, lang) if all(t)}  # P19 and P1376 have no labels
  assert write_triples_tsv(graph, tmp_path / "t.tsv", lang) == len(expected) == 9
  write_entities_tsv(graph, tmp_path / "e.tsv", lang)
  back = read_triples_tsv(tmp_path / "t.tsv", entities_path=tmp_path / "e.tsv")[0]
  assert names(back, lang) == expected
  assert list(back.entity_names[lang].labels) == ENTITY_LABELS[lang]
  with pytest.raises(KGInputError, match="'es'"):
    write_triples_tsv(graph, tmp_path / "x.tsv", "es")


@pytest.mark.parametrize("line,field,reason", [
    ("Berlin\tcountry\tGermany", None, "wrong_field_count"),
    ("Berlin\tcountry\tGermany\ten\textra", None, "wrong_field_count"),
    ("Berlin\t\tGermany\ten", "relation", "empty_field"),
    ("Berlin\tcountry\tGermany\t ", "lang", "empty_field"),
    ("Berlin\tcountry\tGermany\te:n", "lang", "bad_language"),
    ("Berlin\tLand\tDeutschland\tde", "lang", "unknown_language"),
])
def test_triples_tsv_bad_lines(tmp_path, line, field, reason):
  path = write_lines(tmp_path / "bad.tsv", ["Berlin\tcountry\tGermany\ten", line])
  prefix = f"{path}:2" + (f": field {field!r}" if field else "")
  with pytest.raises(KGInputError, match=re.escape(prefix)):
    read_triples_tsv(path, languages=["en", "fr"])
  graph, stats, _ = read_triples_tsv(path, languages=["en", "fr"], skip_bad_records=True)
  assert dict(stats.skipped) == {reason: 1} and stats.records_kept == 1
  assert graph.num_triples == 1


def test_triples_tsv_missing_or_empty(tmp_path):
  with pytest.raises(KGInputError, match="not found"):
    read_triples_tsv(tmp_path / "nope.tsv")
  with pytest.raises(KGInputError, match="no triples"):
    read_triples_tsv(write_lines(tmp_path / "empty.tsv", [""]))
