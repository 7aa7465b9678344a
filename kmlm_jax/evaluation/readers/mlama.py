"""mLAMA probes (Kassner et al. 2021): one folder per language.

Layout assumed (the mLAMA release): `ROOT/LANG/templates.jsonl` (older
copies: `relations.jsonl`) with `{"relation": "P19", "template": "[X] was
born in [Y] .", "label": "place of birth", ...}` per line, and facts
`ROOT/LANG/P19.jsonl` with `{"sub_label", "obj_label", "uuid"}` (plus
`sub_uri`, `obj_uri`) per line. Relations without a facts file are skipped
(not every relation exists in every language).
"""

from __future__ import annotations

from pathlib import Path

from kmlm_jax.evaluation.readers.cloze import ClozeQuery, read_queries, read_templates
from kmlm_jax.evaluation.readers.errors import ReaderError

TEMPLATE_FILES = ("templates.jsonl", "relations.jsonl")


def read_mlama(root: Path | str, lang: str) -> list[ClozeQuery]:
  """Queries of one language, relations in template order, facts in file order."""
  folder = Path(root) / lang
  found = [folder / n for n in TEMPLATE_FILES if (folder / n).is_file()]
  if not found:
    raise ReaderError(f"{folder}: no {' or '.join(TEMPLATE_FILES)}")
  return read_queries(read_templates(found[0], lang), lambda r: [folder / f"{r}.jsonl"], lang)
