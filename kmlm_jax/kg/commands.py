"""`kmlm-jax kg build` and `kmlm-jax kg stats`, as library functions of CLI arguments."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from kmlm_jax.kg import build as build_lib
from kmlm_jax.kg.errors import KGInputError
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


def check_arguments(args) -> None:
  """Argument errors that need no input read: raised before the (long) read."""
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
  out = Path(args.out)
  if out.exists() and not out.is_dir():
    raise KGInputError(f"--out {out}: exists and is not a directory")
  if out.exists() and any(out.iterdir()) and not args.overwrite:
    raise KGInputError(f"{out}: already exists and is not empty (pass --overwrite)")


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
  timings = {"read_s": round(read_s, 2),
             **{k: round(v, 2) for k, v in manifest.pop("timings").items()},
             "total_s": round(time.perf_counter() - start, 2)}
  return "\n".join([build_lib.stats_table(manifest), "",
                    "timings: " + json.dumps(timings), f"wrote {args.out}/manifest.json"])


def stats(directory) -> str:
  manifest = build_lib.read_manifest(directory)
  try:
    ev, read = manifest["eval"], manifest["read"]
    return "\n".join([
        build_lib.stats_table(manifest), "", f"held out of pretraining: {manifest['held_out']}",
        f"link prediction test queries: {ev['lp_test']}", f"probes: {ev['probes']}",
        "xlr: " + ", ".join(f"{k}={sum(v.values())}" for k, v in ev["xlr"].items()),
        f"read: {json.dumps(read['skipped_by_reason'])} "
        f"(read {read['records_read']}, kept {read['records_kept']})"])
  except (KeyError, TypeError, AttributeError) as e:
    raise KGInputError(f"{directory}/manifest.json: damaged (missing or malformed field "
                       f"{e})") from None
