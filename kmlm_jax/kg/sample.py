"""The embedded sample KG: a real multilingual graph shipped with the package.

Countries, regions, capitals, languages and currencies from npm
`world-countries@5.1.0` and CLDR (see `data/NOTICE.md`), written in the
Wikidata JSON dump format so it goes through the dump reader like a real
dump. Rebuild it with `python -m tools.build_sample_kg`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Sequence

# KMLM's ten pretraining languages (paper section 4.1).
KMLM_LANGUAGES = ("en", "vi", "nl", "de", "fr", "it", "es", "ja", "ko", "zh")


def sample_dump_path() -> Path:
  return Path(str(resources.files("kmlm_jax.kg").joinpath("data/sample_wikidata.json")))


SAMPLE_SOURCE = {"sample": "kmlm_jax/kg/data/sample_wikidata.json"}


def build_sample_corpora(out: Path | str, *, overwrite: bool = False) -> dict:
  """The one builder of the embedded sample's corpora (`kmlm-jax kg build --sample`
  with the default options); returns the manifest."""
  from kmlm_jax.kg import build
  graph, stats, info = read_sample()
  return build.build(graph, out, build.BuildOptions(), read_stats=stats, read_info=info,
                     source=SAMPLE_SOURCE, overwrite=overwrite)


def read_sample(languages: Sequence[str] = KMLM_LANGUAGES, **kwargs):
  """(graph, stats, info) of the embedded sample in `languages`."""
  from kmlm_jax.kg.wikidata import read_wikidata_dump
  return read_wikidata_dump(sample_dump_path(), languages, **kwargs)
