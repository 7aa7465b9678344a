"""X-FACTR probes: templates per language plus facts per relation (and language).

Layout assumed (the X-FACTR repository's prompt and fact files; the exact
directory names vary between its releases, so several are accepted):

- `templates`: one file per language, JSON lines
  `{"relation": "P19", "template": "[X] was born in [Y] ."}` or TSV
  `P19<TAB>[X] was born in [Y] .`; the language is `lang` or the file's
  stem (`en.jsonl`).
- `facts_dir`: for each relation R, the first file found of
  `facts_dir/LANG/R.jsonl`, `facts_dir/R.LANG.jsonl`, `facts_dir/R.jsonl`,
  JSON lines `{"sub_uri", "obj_uri", "sub_label", "obj_label"}` with the
  labels in that language. Relations without a facts file are skipped.
"""

from __future__ import annotations

from pathlib import Path

from kmlm_jax.evaluation.readers.cloze import ClozeQuery, read_queries, read_templates
from kmlm_jax.evaluation.readers.errors import ReaderError


def read_xfactr(templates: Path | str, facts_dir: Path | str,
                lang: str | None = None) -> list[ClozeQuery]:
  """Queries of one language: each templated relation's facts, relations in template order."""
  templates, facts_dir = Path(templates), Path(facts_dir)
  lang = lang or templates.name.split(".")[0]
  if not facts_dir.is_dir():
    raise ReaderError(f"{facts_dir}: not a directory of facts files")
  return read_queries(read_templates(templates, lang),
                      lambda r: [facts_dir / lang / f"{r}.jsonl", facts_dir / f"{r}.{lang}.jsonl",
                                 facts_dir / f"{r}.jsonl"], lang)
