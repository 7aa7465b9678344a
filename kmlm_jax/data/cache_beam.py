"""The token cache's units as an Apache Beam pipeline (`kmlm-jax data cache --runner beam`).

Each unit (a corpus shard or a byte range of a text file) is tokenized by
`cache.run_unit` on a worker, which writes its arrays into the parts
directory; the driver then merges them exactly as the in-process build does,
so both give byte-identical caches. The parts directory must be visible to
the workers (a shared file system for distributed runners).
"""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam

from kmlm_jax.data import cache
from kmlm_jax.kg.beam_pipeline import pipeline_options


def _unit(item, spec: cache.CacheSpec, parts: str):
  index, unit = item
  return index, cache.run_unit(spec, tuple(unit), parts, index)


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
  results = json.loads(Path(results_path).read_text(encoding="utf-8"))
  return [r for _, r in sorted(results, key=lambda x: x[0])]
