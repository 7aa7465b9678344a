"""Apache Beam pipelines for `kmlm-jax kg build --runner beam`.

Both pipelines are thin: workers run the library's own functions, and the
small results are assembled on the driver, so the output equals the
in-process path's byte for byte.

- `stream_writer(beam_options)` returns a drop-in for `build.write_stream`.
  Per stream and split (corpora or validation): Create((u, unit)) ->
  Reshuffle -> generate each unit's samples (`Plan.generate`) -> one batch
  per (unit, shard), keyed by shard
  (u + j) mod N with sort key (u, first j) -> GroupByKey -> sort -> one
  TFRecord file per shard, named as `build.shard_paths`. Counts and the
  preview travel in the same GroupByKey under the key `_SUMMARY`. One
  output collection and one sink, so every runner runs the whole pipeline
  (Beam's DaskRunner computes only the last transform of a pipeline and
  mixes the outputs of a multi-output ParDo). Batching per (unit, shard)
  keeps (u, j) order (a unit's samples for a shard are in j order) while
  moving thousands of records per element instead of one.
- `read_wikidata_dump_beam` cuts an uncompressed dump into byte ranges
  (a `.gz`/`.bz2` dump is one range: those streams cannot be split), parses
  each range's lines with `wikidata.LineParser` on workers, and files the
  results on the driver with `wikidata.DumpAssembler` in dump order (range,
  then line within the range; line numbers are counted back from the
  ranges' line counts), so graph, stats, info and error messages equal
  `wikidata.read_wikidata_dump`'s.

Workers get the plan / line parser as a pickle in a staging directory, not
inside the pipeline graph (Dataflow caps the graph's size; a plan holds the
whole KG). The staging directory is a fresh folder under `--temp_location`
when one is given, which must then be storage every worker reads and
writes (gs://, s3://, hdfs://, a shared mount); shards are written there
and copied into the output directory. Without `--temp_location` (a local
runner) staging is a local temporary folder and shards are written in place.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import pickle
import shlex
import shutil
import tempfile
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions)

from kmlm_jax.errors import WriteError
from kmlm_jax.kg import build, records, wikidata
from kmlm_jax.kg.errors import KGInputError

DEFAULT_SPLIT_BYTES = 64 << 20
_DASK_RUNNER = "apache_beam.runners.dask.dask_runner"
# The key of a unit's summary among the (shard, batch) pairs it yields (one output
# collection: the Dask runner mixes the outputs of a multi-output ParDo).
_SUMMARY = -1


# ----------------------------------------------------------------- options

def pipeline_options(beam_options: str = "") -> PipelineOptions:
  """`--beam-options` (one shell-quoted string) as `PipelineOptions`.

  The runner defaults to DirectRunner (`--direct_num_workers`,
  `--direct_running_mode=in_memory|multi_threading|multi_processing`);
  `--runner=DaskRunner --dask_client_address=HOST:PORT` runs on a
  `dask.distributed` cluster.
  Unknown flags are an error rather than Beam's logged warning.
  """
  try:
    args = shlex.split(beam_options or "")
  except ValueError as e:
    raise KGInputError(f"--beam-options {beam_options!r}: {e}") from None
  if any("DaskRunner" in a for a in args):
    try:
      importlib.import_module(_DASK_RUNNER)  # registers the --dask_* options
    except ImportError as e:
      raise KGInputError(f"--beam-options: the DaskRunner needs dask and distributed ({e}); "
                         "pip install 'dask[distributed]'") from None
  options = PipelineOptions(args)
  known = options.get_all_options()
  unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
  if unknown:
    raise KGInputError(f"--beam-options: unknown Beam pipeline option(s) "
                       f"{', '.join('--' + u for u in unknown)}")
  standard = options.view_as(StandardOptions)
  if standard.runner is None:
    standard.runner = "DirectRunner"
  elif standard.runner == "DaskRunner":  # Beam knows it by its full name only
    standard.runner = f"{_DASK_RUNNER}.DaskRunner"
  return options


# ----------------------------------------------------------------- staging

_LOADED: dict[str, object] = {}
_LOAD_LOCK = threading.Lock()


def _create(path: str) -> BinaryIO:
  return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _open_any(path) -> BinaryIO:
  """Opens a local path or a URL of a Beam file system for binary reading."""
  return FileSystems.open(str(path), compression_type=CompressionTypes.UNCOMPRESSED)


def _put_pickle(path: str, obj) -> None:
  with _create(path) as f:
    pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def _get_pickle(path: str):
  with _open_any(path) as f:
    return pickle.load(f)


def _load_shared(path: str):
  """The object pickled at `path`, loaded once per worker process."""
  with _LOAD_LOCK:
    if path not in _LOADED:
      _LOADED[path] = _get_pickle(path)
    return _LOADED[path]


class _Staging:
  """A scratch folder for one pipeline: under --temp_location, or local."""

  def __init__(self, options: PipelineOptions):
    temp = options.view_as(GoogleCloudOptions).temp_location
    # With a temp_location, workers may not share the driver's disk: every
    # file they read or write goes through staging.
    self.remote = bool(temp)
    self.root = (FileSystems.join(temp, f"kmlm-beam-{uuid.uuid4().hex}") if temp
                 else tempfile.mkdtemp(prefix="kmlm-beam-"))
    self.shared: list[str] = []

  def path(self, *parts: str) -> str:
    return FileSystems.join(self.root, *parts)

  def share(self, name: str, obj) -> str:
    """Pickles `obj` for the workers; returns the path `_load_shared` takes."""
    path = self.path(name)
    _put_pickle(path, obj)
    self.shared.append(path)
    return path

  def upload(self, local: Path, name: str) -> str:
    """Copies a driver-local file where every worker can read it."""
    path = self.path(name)
    with open(local, "rb") as src, _create(path) as dst:
      shutil.copyfileobj(src, dst, 16 << 20)
    return path

  def __enter__(self) -> "_Staging":
    return self

  def __exit__(self, *_) -> None:
    for path in self.shared:
      _LOADED.pop(path, None)  # in-process runners loaded it here
    if "://" not in self.root:
      shutil.rmtree(self.root, ignore_errors=True)
      return
    with contextlib.suppress(BeamIOError):  # nothing was written there
      # The trailing "/" makes object stores (gs://, s3://) delete the whole prefix.
      FileSystems.delete([self.root.rstrip("/") + "/"])


# ----------------------------------------------------------------- corpus shards

def stream_writer(beam_options: str = ""):
  """A `build.write_stream` replacement that runs one Beam pipeline per stream."""
  # Bad options fail here, before any work.
  return functools.partial(write_stream, options=pipeline_options(beam_options))


def write_stream(plan: build.Plan, stream: str, out: Path, progress: bool = False,
                 split: str = build.TRAIN, *, options: PipelineOptions) -> dict:
  """Writes one stream's shards of one split and its preview with Beam; returns its
  manifest entry."""
  del progress  # Beam runners report their own
  out, n = Path(out), plan.options.num_shards
  paths = build.shard_paths(stream, n, split)
  (out / paths[0]).parent.mkdir(parents=True)
  units = list(enumerate(plan.units(stream, split)))
  with _Staging(options) as staging:
    plan_path = staging.share("plan.pkl", plan)
    shard_root = staging.path("out") if staging.remote else str(out)
    summary_path = staging.path("summary.json")
    with beam.Pipeline(options=options) as p:
      generated = (p | "Units" >> beam.Create(units)
                   | "Spread" >> beam.Reshuffle()
                   | "Generate" >> beam.ParDo(_GenerateUnit(plan_path, n, plan.options.preview)))
      every_key = p | "EveryKey" >> beam.Create([(k, None) for k in (*range(n), _SUMMARY)])
      _ = ((generated, every_key) | "Flatten" >> beam.Flatten()
           | "ByShard" >> beam.GroupByKey()
           | "Write" >> beam.Map(_write_group, root=shard_root, paths=paths,
                                 summary_path=summary_path, preview=plan.options.preview))
    if staging.remote:
      import tensorflow as tf
      for p in paths:
        tf.io.gfile.copy(f"{shard_root}/{p}", str(out / p), overwrite=True)
    missing = [p for p in paths if not (out / p).is_file()]
    if missing or not FileSystems.exists(summary_path):
      raise WriteError(f"the Beam runner {options.view_as(StandardOptions).runner} finished "
                       f"without writing {(missing or [summary_path])[0]} (and "
                       f"{max(len(missing) - 1, 0)} more shards) of stream {stream}")
    with _open_any(summary_path) as f:
      summary = json.loads(f.read().decode("utf-8"))
  return build.finish_stream(out, stream, paths, summary["preview"], summary["by_lang"],
                             summary["by_cycle"], summary["not_generated"], split)


class _GenerateUnit(beam.DoFn):
  """(u, unit) -> (shard, ((u, first j), [record bytes])) per shard the unit
  touches, plus (_SUMMARY, its counts and first preview lines)."""

  def __init__(self, plan_path: str, num_shards: int, preview: int):
    self.plan_path, self.num_shards, self.preview = plan_path, num_shards, preview

  def process(self, element):
    u, unit = element
    plan = _load_shared(self.plan_path)
    n = self.num_shards
    batches: dict[int, tuple] = {}
    by_lang, by_cycle, counts, preview = Counter(), Counter(), Counter(), []
    for j, sample in enumerate(plan.generate(unit, counts)):
      shard = (u + j) % n
      batches.setdefault(shard, ((u, j), []))[1].append(records.to_example(sample))
      build.count_sample(sample, by_lang, by_cycle)
      if j < self.preview:
        preview.append(((u, j), build.preview_line(sample)))
    yield from batches.items()
    yield _SUMMARY, (by_lang, by_cycle, counts, preview)


def _summarize(keyed: tuple, preview: int) -> dict:
  """The units' summaries (one group) summed; the `preview` first lines in (u, j) order."""
  by_lang, by_cycle, counts, lines = Counter(), Counter(), Counter(), []
  for summary in (v for v in keyed[1] if v is not None):
    for total, part in zip((by_lang, by_cycle, counts), summary[:3]):
      total.update(part)
    lines.extend(summary[3])
  return {"by_lang": by_lang, "by_cycle": by_cycle, "not_generated": counts,
          "preview": [line for _, line in sorted(lines)[:preview]]}


def _write_group(item, root: str, paths: Sequence[str], summary_path: str,
                 preview: int) -> None:
  """Writes one shard's batches in (u, j) order, or (key `_SUMMARY`) the summary of every
  unit."""
  if item[0] == _SUMMARY:
    with _create(summary_path) as f:
      f.write(json.dumps(_summarize(item, preview), ensure_ascii=False).encode("utf-8"))
    return
  import tensorflow as tf
  shard, values = item
  batches = sorted((v for v in values if v is not None), key=lambda v: v[0])
  path = f"{root}/{paths[shard]}"
  tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
  with tf.io.TFRecordWriter(path) as writer:
    for _, batch in batches:
      for record in batch:
        writer.write(record)


# ----------------------------------------------------------------- dump reader

def read_wikidata_dump_beam(
    path: Path | str,
    languages: Sequence[str],
    beam_options: str = "",
    *,
    entity_whitelist: Path | str | None = None,
    relation_whitelist: Path | str | None = None,
    skip_bad_records: bool = False,
    progress: bool = False,
    max_entities: int | None = None,
    extra_language_codes: Iterable[str] = (),
    split_bytes: int = DEFAULT_SPLIT_BYTES,
):
  """`wikidata.read_wikidata_dump` with the lines parsed by a Beam pipeline.

  Same arguments and results (graph, stats, info), errors included.
  `path` may also be a URL of a Beam file system (gs://, s3://, hdfs://).
  A local dump is read in place, or, with `--temp_location`, from a copy
  staged there (workers may not see the driver's disk). `split_bytes` is
  the size of the byte ranges an uncompressed dump is cut into (one worker
  task each). With `max_entities` the whole file is still parsed; the
  assembly stops at the same line.
  """
  if split_bytes < 1:
    raise KGInputError(f"split_bytes must be >= 1, got {split_bytes}")
  options = pipeline_options(beam_options)
  url = "://" in str(path)
  path, parse = wikidata.prepare_read(path, languages, entity_whitelist=entity_whitelist,
                                      relation_whitelist=relation_whitelist,
                                      max_entities=max_entities,
                                      extra_language_codes=extra_language_codes, local=not url)
  size = _dump_size(path, url)
  compression = wikidata.dump_compression(path, _open_any)
  ranges = _byte_ranges(size, split_bytes, compression)
  assembler = wikidata.DumpAssembler(path, parse.languages, skip_bad_records, max_entities)
  assembler.compression = compression
  with _Staging(options) as staging:
    dump = str(path) if url else str(path.resolve())
    if staging.remote and not url:
      dump = staging.upload(path, "dump" + os.path.splitext(dump)[1])
    parser_path = staging.share("parser.pkl", parse)
    results = staging.path("ranges")
    with beam.Pipeline(options=options) as p:
      _ = (p | "Ranges" >> beam.Create(list(enumerate(ranges)))
           | "Spread" >> beam.Reshuffle()
           | "Parse" >> beam.Map(_parse_range, dump=dump, compression=compression,
                                 parser_path=parser_path, results=results))
    with wikidata.gc_paused():
      _assemble(assembler, results, len(ranges), progress)
      return assembler.finish()


def _dump_size(path, url: bool) -> int:
  if not url:
    return path.stat().st_size
  if not FileSystems.exists(path):
    raise KGInputError(f"{path}: Wikidata dump not found")
  return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def _byte_ranges(size: int, split_bytes: int,
                 compression: str | None) -> list[tuple[int, int | None]]:
  """[start, end) ranges; a line belongs to the range its first byte is in."""
  if compression is not None or size == 0:
    return [(0, None)]
  return [(s, min(s + split_bytes, size)) for s in range(0, size, split_bytes)]


def _range_lines(f, start: int, end: int | None):
  """The lines of `f` that start in [start, end); every line when end is None."""
  if end is None:
    yield from f
    return
  pos = start
  if start > 0:
    f.seek(start - 1)
    pos = start - 1 + len(f.readline())  # the line that owns byte start - 1
  while pos < end:
    line = f.readline()
    if not line:
      return
    pos += len(line)
    yield line


def _parse_range(element, dump: str, compression: str | None, parser_path: str,
                 results: str) -> int:
  """Parses one byte range; writes (lines, [(index in range, parse)], read error)."""
  index, (start, end) = element
  parse = _load_shared(parser_path)
  count, parsed, error = 0, [], None
  raw, stream = wikidata.open_dump(dump, compression, _open_any)
  try:
    for line in _range_lines(stream, start, end):
      result = parse(line)
      if result is not None:
        parsed.append((count, result))
      count += 1
  except wikidata.READ_ERRORS as e:
    error = f"{type(e).__name__}: {e}"
  finally:
    stream.close()
    raw.close()
  _put_pickle(FileSystems.join(results, f"range-{index:06d}.pkl"), (count, parsed, error))
  return index


def _assemble(assembler: wikidata.DumpAssembler, results: str, num_ranges: int,
              progress: bool) -> None:
  """Files every range's parses in dump order, as the sequential loop would."""
  from tqdm.auto import tqdm
  base = 0
  for index in tqdm(range(num_ranges), desc="assembling", unit="range", disable=not progress):
    count, parsed, error = _get_pickle(FileSystems.join(results, f"range-{index:06d}.pkl"))
    for local, result in parsed:
      if assembler.add(base + local + 1, result):
        assembler.lines = base + local + 1
        return
    base += count
    if error is not None:
      raise wikidata.read_error(assembler.path, assembler.compression, base, error)
  assembler.lines = base

