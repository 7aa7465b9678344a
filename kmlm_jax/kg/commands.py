"""`kmlm-jax kg build` and `kmlm-jax kg stats`, as library functions of CLI arguments."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from kmlm_jax import fileio
from kmlm_jax.errors import WriteError
from kmlm_jax.kg import build as build_lib
from kmlm_jax.kg.errors import KGInputError
from kmlm_jax.kg.evalsets import SPLITS
from kmlm_jax.kg.sample import KMLM_LANGUAGES


def _languages(args) -> tuple[str, ...]:
  if args.langs is not None:
    from kmlm_jax.kg.wikidata import check_languages
    langs = tuple(l.strip() for l in args.langs.split(",") if l.strip())
    if not langs:
      raise KGInputError(f"--langs {args.langs!r}: no language codes (e.g. --langs en,fr,de)")
    try:
      return check_languages(langs)
    except KGInputError as e:
      raise KGInputError(f"--langs: {e}") from None
  if args.sample:
    return KMLM_LANGUAGES
  if args.triples_tsv:
    return ()  # the file's own languages
  raise KGInputError("--langs is required with --wikidata-dump (e.g. --langs en,fr,de)")


def read_source(args):
  """(graph, stats, info, source description) for the chosen input."""
  langs = _languages(args)
  if args.triples_tsv:
    from kmlm_jax.kg.triples_tsv import read_triples_tsv
    graph, stats, info = read_triples_tsv(args.triples_tsv, entities_path=args.entities_tsv,
                                          languages=langs or None,
                                          skip_bad_records=args.skip_bad_records)
    return graph, stats, info, {"triples_tsv": args.triples_tsv,
                                "entities_tsv": args.entities_tsv}
  if args.sample:
    from kmlm_jax.kg.sample import SAMPLE_SOURCE, sample_dump_path
    path, source = sample_dump_path(), dict(SAMPLE_SOURCE)
  else:
    path, source = args.wikidata_dump, {"wikidata_dump": args.wikidata_dump}
  if getattr(args, "runner", "direct") == "beam":
    # Parses the dump's lines on Beam workers; same graph, stats and info.
    from kmlm_jax.kg import beam_pipeline
    read = functools.partial(beam_pipeline.read_wikidata_dump_beam,
                             beam_options=args.beam_options)
  else:
    from kmlm_jax.kg.wikidata import read_wikidata_dump as read
  graph, stats, info = read(
      path, langs, entity_whitelist=args.entity_whitelist,
      relation_whitelist=args.relation_whitelist, skip_bad_records=args.skip_bad_records,
      progress=True)
  source.update(entity_whitelist=args.entity_whitelist, relation_whitelist=args.relation_whitelist)
  return graph, stats, info, source


def check_out(out: Path, overwrite: bool) -> None:
  """An existing non-empty `--out` (without --overwrite), a file, or a folder that cannot
  be written in (read-only, no permission): refused before anything is read."""
  try:
    fileio.check_output_dir(out, overwrite, KGInputError)
  except KGInputError as e:
    raise KGInputError(f"--out {e}") from None
  parent = next((p for p in out.absolute().parents if p.exists()), Path("/"))
  if not parent.is_dir():
    raise KGInputError(f"--out {out}: {parent} is not a directory")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise WriteError(f"--out {out}: cannot write in {parent} (read-only file system or "
                     "no permission)")


def check_arguments(args) -> None:
  """Argument errors that need no input read: raised before the (long) read."""
  check_out(Path(args.out), args.overwrite)
  if args.entities_tsv and not args.triples_tsv:
    raise KGInputError("--entities-tsv goes with --triples-tsv")
  if args.num_shards < 1:
    raise KGInputError(f"--num-shards must be at least 1, got {args.num_shards}")
  for flag, path in (("--wikidata-dump", args.wikidata_dump), ("--triples-tsv", args.triples_tsv),
                     ("--entities-tsv", args.entities_tsv),
                     ("--entity-whitelist", args.entity_whitelist),
                     ("--relation-whitelist", args.relation_whitelist)):
    if path and "://" not in path and not Path(path).is_file():  # URLs: read by Beam
      raise KGInputError(f"{flag} {path}: not found (no such file)")


def build(args) -> str:
  """Runs the build; returns the text to print (stats table, timings, manifest path)."""
  check_arguments(args)
  _languages(args)  # bad --langs fail before any reading
  start = time.perf_counter()
  writer = None
  if args.runner == "beam":
    from kmlm_jax.kg import beam_pipeline
    writer = beam_pipeline.stream_writer(args.beam_options)  # bad options fail before reading
  graph, stats, info, source = read_source(args)
  read_s = time.perf_counter() - start
  options = build_lib.BuildOptions(seed=args.seed, num_shards=args.num_shards)
  manifest = build_lib.build(graph, args.out, options, read_stats=stats, source=source,
                             read_info=info, overwrite=args.overwrite, progress=True,
                             stream_writer=writer)
  timings = {"read": read_s, **{k.removesuffix("_s"): v for k, v in
                                  manifest.pop("timings").items()},
             "total": time.perf_counter() - start}
  return "\n".join([report(manifest), "",
                    "timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()),
                    f"wrote {args.out}/manifest.json"])


def report(manifest: dict) -> str:
  """The manifest as aligned tables: samples per stream and language, evaluation
  sets per language, what the read skipped."""
  ev, read, langs = manifest["eval"], manifest["read"], manifest["languages"]
  per_lang = [("link prediction test", ev["lp_test"]), ("probes", ev["probes"]),
              *((f"xlr {split}", ev["xlr"][split]) for split in SPLITS),
              *((f"alignment {split}", {l: s[split] for l, s in ev["alignment"].items()})
                for split in SPLITS)]
  rows = [[name, *(counts.get(l, 0) for l in langs), sum(counts.values())]
          for name, counts in per_lang]
  skipped = [[reason, n, (read["skipped_examples"].get(reason) or [""])[0]]
             for reason, n in read["skipped_by_reason"].items()]
  held = " ".join(f"{k}={v:,}" for k, v in manifest["held_out"].items())
  lines = [build_lib.stats_table(manifest), "", f"held out of pretraining: {held}", "",
           *_no_alias_report(manifest), *_validation_report(manifest),
           build_lib.table(["evaluation set", *langs, "total"], rows), "",
           f"read: {read['records_read']:,} records, kept {read['records_kept']:,}, "
           f"skipped {read['skipped']:,}; names cleaned (tabs, line breaks -> space): "
           f"{read.get('names_cleaned', 0):,}"]
  if skipped:
    lines += ["", build_lib.table(["skipped", "records", "first at"], skipped)]
  return "\n".join(lines)


def _no_alias_report(manifest: dict) -> list[str]:
  """The triples that wrote no alias sample (none of their names has an alias in the drawn
  languages; a parallel pair needs one on each side), per stream (none: an older build)."""
  counts = {name: entry["not_generated"]["no_alias"] for name, entry in manifest["streams"].items()
            if "no_alias" in entry.get("not_generated", {})}
  if not counts:
    return []
  return ["alias samples not written (no alias in the drawn languages): "
          + " ".join(f"{name}={n:,}" for name, n in counts.items()), ""]


def _validation_report(manifest: dict) -> list[str]:
  """The validation split's counts (none for a build without one)."""
  if "validation" not in manifest:
    return []
  v = manifest["validation"]
  counts = " ".join(f"{k}={v[k]:,}" for k in ("pairs", "triples", "cycles3", "cycles4"))
  return [f"validation split (never in pretraining): {counts} "
          f"links={sum(v['links'].values()):,}", ""]


def stats(directory) -> str:
  manifest = build_lib.read_manifest(directory)
  try:
    return report(manifest)
  except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
    raise KGInputError(f"{directory}/manifest.json: damaged (missing or malformed field "
                       f"{e})") from None
