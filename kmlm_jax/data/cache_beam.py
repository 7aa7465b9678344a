"""The token cache's units as an Apache Beam pipeline (`kmlm-jax data cache --runner beam`).

Each unit (a corpus shard or a byte range of a text file) is tokenized by
`cache.run_unit` on a worker, which writes its arrays into the parts
directory; the driver then merges them exactly as the in-process build does,
so both give byte-identical caches. The parts directory must be visible to
the workers (a shared file system for distributed runners). A unit with bad
input (e.g. a non-UTF-8 text line) is not retried: its error comes back as a
result and the driver raises it once, as the in-process build does.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from kmlm_jax.data import cache
from kmlm_jax.errors import InputError
from kmlm_jax.text.errors import CorpusError


@contextlib.contextmanager
def _no_import_warnings():
  """Beam's import warns on the root logger that optional GCP clients are missing (and
  so configures logging for the whole process); neither is the user's business."""
  root, quiet = logging.getLogger(), logging.NullHandler()
  drop = lambda record: not str(record.msg).startswith("apitools not found")  # noqa: E731
  root.addHandler(quiet)
  root.addFilter(drop)
  try:
    yield
  finally:
    root.removeHandler(quiet)
    root.removeFilter(drop)


with _no_import_warnings():
  import apache_beam as beam

  from kmlm_jax.kg.beam_pipeline import pipeline_options


def _unit(item, spec: cache.CacheSpec, parts: str):
  index, unit = item
  try:
    return index, cache.run_unit(spec, tuple(unit), parts, index)
  except InputError as e:  # the input's fault: reported once by the driver, never retried
    return index, {"error": str(e)}


def _write(results, path: str) -> None:
  Path(path).write_text(json.dumps(sorted(results)), encoding="utf-8")


def run_units(spec: cache.CacheSpec, units: list[tuple], parts: str,
              beam_options: str = "") -> list[dict]:
  """`cache.run_unit` over every unit with Beam; the units' counts in unit order."""
  options = pipeline_options(beam_options)
  results_path = str(Path(parts) / "results.json")
  with beam.Pipeline(options=options) as p:
    _ = (p | "Units" >> beam.Create(list(enumerate(units)))
         | "Spread" >> beam.Reshuffle()
         | "Tokenize" >> beam.Map(_unit, spec=spec, parts=parts)
         | "Collect" >> beam.combiners.ToList()
         | "Write" >> beam.Map(_write, path=results_path))
  results = [r for _, r in sorted(json.loads(Path(results_path).read_text(encoding="utf-8")),
                                  key=lambda x: x[0])]
  errors = [r["error"] for r in results if "error" in r]
  if errors:
    raise CorpusError(errors[0])
  return results
