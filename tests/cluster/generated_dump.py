"""A generated Wikidata JSON dump (one entity per line, as the real dumps): N items labelled
in a few languages, linked by a handful of properties, with aliases and some bad-free noise
(items without labels in some languages, literal-valued claims the reader ignores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LANGS = ("en", "fr", "de", "ja", "zh")
PROPERTIES = {"P17": "country", "P31": "instance of", "P131": "located in", "P47": "borders",
              "P361": "part of", "P527": "has part", "P138": "named after", "P279": "subclass of"}


def _labels(rng, index: int, prefix: str) -> dict:
  langs = [lang for lang in LANGS if lang == "en" or rng.random() < 0.7]
  return {lang: {"language": lang, "value": f"{prefix}{index} {lang}"} for lang in langs}


def _claim(prop: str, target: int) -> dict:
  value = {"entity-type": "item", "numeric-id": target, "id": f"Q{target}"}
  return {"mainsnak": {"snaktype": "value", "property": prop, "datatype": "wikibase-item",
                       "datavalue": {"value": value, "type": "wikibase-entityid"}},
          "type": "statement", "rank": "normal"}


def _item(rng, index: int, num_entities: int) -> dict:
  claims: dict[str, list] = {}
  for _ in range(int(rng.integers(1, 5))):
    prop = list(PROPERTIES)[int(rng.integers(len(PROPERTIES)))]
    # Mostly near neighbours, so the graph has cycles for the reasoning stream.
    target = int(index + rng.integers(-20, 21)) if rng.random() < 0.8 else \
        int(rng.integers(1, num_entities + 1))
    if 1 <= target <= num_entities and target != index:
      claims.setdefault(prop, []).append(_claim(prop, target))
  if rng.random() < 0.2:  # a literal claim: not an entity link
    claims["P1082"] = [{"mainsnak": {"snaktype": "value", "property": "P1082",
                                     "datavalue": {"value": {"amount": "+12"},
                                                   "type": "quantity"}},
                        "type": "statement", "rank": "normal"}]
  item = {"type": "item", "id": f"Q{index}", "labels": _labels(rng, index, "entity"),
          "claims": claims}
  if rng.random() < 0.1:
    item["aliases"] = {"en": [{"language": "en", "value": f"alias of entity{index}"}]}
  return item


def write_dump(path: Path, num_entities: int = 20_000, seed: int = 0) -> Path:
  """Writes the dump (JSON array, one entity per line) and returns `path`."""
  rng = np.random.default_rng(seed)
  with open(path, "w", encoding="utf-8") as f:
    f.write("[\n")
    for prop, label in PROPERTIES.items():
      labels = {lang: {"language": lang, "value": f"{label} ({lang})"} for lang in LANGS}
      f.write(json.dumps({"type": "property", "id": prop, "labels": labels}) + ",\n")
    for i in range(1, num_entities + 1):
      f.write(json.dumps(_item(rng, i, num_entities), ensure_ascii=False)
              + (",\n" if i < num_entities else "\n"))
    f.write("]\n")
  return path
