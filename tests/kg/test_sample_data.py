"""Checks of the shipped default data: the sample KG and the UDHR subset.

They read only the files in the package (no network, no builder run).
"""

from __future__ import annotations

import collections
import gzip
import json
from pathlib import Path

import pytest

import kmlm_jax

PKG = Path(kmlm_jax.__file__).parent
KG_DATA = PKG / "kg" / "data"
UDHR_DIR = PKG / "text" / "data" / "udhr"
KMLM_LANGS = ("en", "vi", "nl", "de", "fr", "it", "es", "ja", "ko", "zh")
COUNTRY_QIDS = range(9000001, 9100000)  # the synthetic QID block of countries


def _sample_text() -> str:
  plain = KG_DATA / "sample_wikidata.json"
  if plain.exists():
    return plain.read_text(encoding="utf-8")
  return gzip.decompress((KG_DATA / "sample_wikidata.json.gz").read_bytes()).decode("utf-8")


@pytest.fixture(scope="module")
def dump_lines() -> list[str]:
  text = _sample_text()
  assert text.endswith("\n")
  return text[:-1].split("\n")


@pytest.fixture(scope="module")
def entities(dump_lines) -> dict[str, dict]:
  out = {}
  for line in dump_lines[1:-1]:
    entity = json.loads(line.removesuffix(","))
    assert entity["id"] not in out, entity["id"]
    out[entity["id"]] = entity
  return out


def _targets(entity: dict):
  for pid, statements in entity["claims"].items():
    for st in statements:
      snak = st["mainsnak"]
      assert snak["property"] == pid and snak["snaktype"] == "value"
      assert snak["datavalue"]["type"] == "wikibase-entityid"
      value = snak["datavalue"]["value"]
      assert value["id"] == f"Q{value['numeric-id']}"
      yield pid, value["id"]


def _countries(entities) -> list[dict]:
  return [e for e in entities.values()
          if e["type"] == "item" and int(e["id"][1:]) in COUNTRY_QIDS]


def test_dump_format(dump_lines):
  assert dump_lines[0] == "[" and dump_lines[-1] == "]"
  body = dump_lines[1:-1]
  assert len(body) > 500
  for i, line in enumerate(body):
    last = i == len(body) - 1
    assert line.endswith(",") != last, f"line {i + 2}: comma rule"
    assert not line.endswith(",,")
    entity = json.loads(line.removesuffix(","))
    assert isinstance(entity, dict) and entity["type"] in ("item", "property")
    for lang, label in entity["labels"].items():
      assert label == {"language": lang, "value": label["value"]} and label["value"]


def test_claim_targets_exist(entities):
  for entity in entities.values():
    for _, target in _targets(entity):
      assert target in entities, f"{entity['id']} -> {target}"


def test_properties_are_entities_with_english_label(entities):
  used = {pid for e in entities.values() for pid, _ in _targets(e)}
  assert used == {"P30", "P36", "P37", "P38", "P47", "P361", "P1376"}
  for pid in used:
    prop = entities[pid]
    assert prop["type"] == "property" and prop["datatype"] == "wikibase-item"
    assert prop["labels"]["en"]["value"]


def test_countries_have_english_and_vietnamese_labels(entities):
  countries = _countries(entities)
  assert len(countries) == 250
  for c in countries:
    assert c["labels"]["en"]["value"] and c["labels"]["vi"]["value"], c["id"]


def test_kmlm_languages_label_most_countries(entities):
  countries = _countries(entities)
  for lang in KMLM_LANGS:
    assert sum(lang in c["labels"] for c in countries) >= 240, lang


def test_borders_are_symmetric_with_many_triangles(entities):
  adj = collections.defaultdict(set)
  for e in entities.values():
    for pid, target in _targets(e):
      if pid == "P47":
        adj[e["id"]].add(target)
  assert all(a in adj[b] for a in adj for b in adj[a])
  triangles = sum(1 for a in adj for b in adj[a] if a < b
                  for c in adj[a] & adj[b] if b < c)
  assert triangles > 50


def test_udhr_subset():
  files = sorted(UDHR_DIR.glob("*.txt"))
  assert len(files) >= 60
  for path in files:
    text = path.read_bytes().decode("utf-8")  # strict: raises on bad UTF-8
    assert text.endswith("\n"), path.name
    lines = text[:-1].split("\n")
    assert lines and all(line.strip() for line in lines), path.name
  en = (UDHR_DIR / "en.txt").read_text(encoding="utf-8")
  assert "All human beings are born free and equal in dignity and rights." in en
  for lang in KMLM_LANGS:
    assert (UDHR_DIR / f"{lang}.txt").exists(), lang


def test_notices_and_builders_not_imported_by_library():
  """The maintainer tools that rebuild the embedded data live in tools/, outside the
  package, and the package never imports them."""
  assert (KG_DATA / "NOTICE.md").exists() and (UDHR_DIR / "NOTICE.md").exists()
  assert (PKG.parent / "tools" / "build_sample_kg.py").exists()
  assert (PKG.parent / "tools" / "build_udhr.py").exists()
  for path in PKG.rglob("*.py"):
    source = path.read_text(encoding="utf-8")
    assert "import tools" not in source and "from tools" not in source, path
