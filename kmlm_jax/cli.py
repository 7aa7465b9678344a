"""`kmlm-jax` command line: parses arguments and calls the library."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from kmlm_jax.errors import InputError, KmlmError, WriteError


def _add_convert(sub):
  p = sub.add_parser("convert", help="convert between transformers and kmlm-jax checkpoints")
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--from-hf", metavar="DIR", help="transformers directory to read")
  src.add_argument("--from", dest="from_ckpt", metavar="CKPT",
                   help="kmlm-jax checkpoint to read: a model checkpoint dir, a training "
                        "checkpoint WORKDIR/checkpoints/STEP, or WORKDIR (its newest step)")
  p.add_argument("--to", metavar="CKPT", help="kmlm-jax checkpoint to write (with --from-hf)")
  p.add_argument("--to-hf", metavar="DIR", help="transformers directory to write (with --from)")
  p.add_argument("--verify", action="store_true",
                 help="compare with transformers PyTorch; fails above 1e-4")
  p.add_argument("--overwrite", action="store_true", help="replace an existing destination")


def _add_init(sub):
  p = sub.add_parser("init", help="write a randomly initialised checkpoint of a preset")
  p.add_argument("--preset", required=True)
  p.add_argument("--to", required=True, metavar="CKPT")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--overwrite", action="store_true")


def _add_kg(sub):
  p = sub.add_parser("kg", help="knowledge graph corpora: build, stats")
  kg = p.add_subparsers(dest="kg_command", required=True)
  b = kg.add_parser("build", help="generate pretraining corpora and evaluation sets from a KG")
  src = b.add_mutually_exclusive_group(required=True)
  src.add_argument("--sample", action="store_true", help="the embedded sample KG")
  src.add_argument("--wikidata-dump", metavar="FILE", help=".json, .json.gz or .json.bz2 dump")
  src.add_argument("--triples-tsv", metavar="FILE", help="Prix-LM triples TSV")
  b.add_argument("--entities-tsv", metavar="FILE", help="Prix-LM entity list (with --triples-tsv)")
  b.add_argument("--langs", help="comma-separated language codes (default for --sample: "
                 "the ten KMLM languages)")
  b.add_argument("--entity-whitelist", metavar="FILE")
  b.add_argument("--relation-whitelist", metavar="FILE")
  b.add_argument("--out", required=True, metavar="DIR")
  b.add_argument("--seed", type=int, default=0)
  b.add_argument("--num-shards", type=int, default=4)
  b.add_argument("--skip-bad-records", action="store_true",
                 help="count and skip bad records instead of failing")
  b.add_argument("--runner", choices=("direct", "beam"), default="direct",
                 help="direct: in this process; beam: an Apache Beam pipeline")
  b.add_argument("--beam-options", default="",
                 help="extra Beam pipeline options, e.g. '--runner=DataflowRunner --project=P'")
  b.add_argument("--overwrite", action="store_true")
  st = kg.add_parser("stats", help="print the manifest of a built corpus directory")
  st.add_argument("dir", metavar="DIR")
  _add_kg_import(kg)


def _add_kg_import(kg):
  i = kg.add_parser("import-kmlm", help="KMLM's released corpora (kg.zip, kg_clean.mono.zip, "
                    "kg.cycle.zip) -> a corpus directory the token cache and train read")
  i.add_argument("--kg", metavar="DIR|ZIP", help="code-switched sentences (kg.zip or kg/)")
  i.add_argument("--mono", metavar="DIR|ZIP",
                 help="monolingual sentences, the parallel stream (kg_clean.mono.zip)")
  i.add_argument("--cycles", metavar="DIR|ZIP", help="cycle samples (kg.cycle.zip)")
  i.add_argument("--out", required=True, metavar="DIR")
  i.add_argument("--num-shards", type=int, default=4)
  i.add_argument("--validation-fraction", type=float, metavar="F",
                 help="share of the lines (by a hash of the line) held out for validation "
                      "(default 0.01)")
  i.add_argument("--skip-bad-records", action="store_true",
                 help="count and skip malformed lines instead of failing")
  i.add_argument("--overwrite", action="store_true")


def _add_data(sub):
  p = sub.add_parser("data", help="the token cache the training input reads")
  data = p.add_subparsers(dest="data_command", required=True)
  c = data.add_parser("cache", help="tokenize the corpora of a config's data once (offline)")
  c.add_argument("--config", required=True, metavar="FILE", help="configs/*.py with get_config()")
  c.add_argument("--runner", choices=("direct", "beam"), default="direct",
                 help="direct: worker processes on this machine; beam: an Apache Beam pipeline")
  c.add_argument("--beam-options", default="",
                 help="extra Beam pipeline options, e.g. '--runner=DataflowRunner --project=P'")
  c.add_argument("overrides", nargs="*", metavar="key=value",
                 help="config overrides, e.g. data.cache_dir=/data/cache data.seq_length=128")


def _data(args) -> int:
  import json

  from kmlm_jax.experiment import load_config, preflight
  from kmlm_jax.training import data as data_lib
  config = load_config(args.config, args.overrides)
  preflight(config, train=False)  # what the cache needs: paths, text files, tokenizer
  target, meta, sources = data_lib.build_cache(config.data, runner=args.runner,
                                               beam_options=args.beam_options)
  print(json.dumps({s: {k: meta["sources"][s][k] for k in ("examples", "tokens", "skipped")}
                    for s in sources}, indent=1))
  print(f"cache_dir={target}")
  return 0


def _add_train(sub):
  p = sub.add_parser("train", help="KMLM pretraining from a config file")
  p.add_argument("--config", required=True, metavar="FILE", help="configs/*.py with get_config()")
  p.add_argument("--workdir", metavar="DIR", help="default: workdir/<config name>")
  p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
  p.add_argument("--allow-schedule-change", action="store_true",
                 help="with --resume: accept a learning-rate schedule (train.steps, "
                      "learning_rate, warmup_steps) that differs from the checkpoint's run")
  p.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() (auto when SLURM / TPU pod / "
                      "JAX_COORDINATOR_ADDRESS is set)")
  p.add_argument("--dry-run", action="store_true",
                 help="compile the train step for the config's shapes, print parameters, "
                      "FLOPs and memory per device, and exit (reads no data); exit 2 when "
                      "it does not fit the memory budget")
  p.add_argument("--memory-budget", type=float, metavar="GIB",
                 help="with --dry-run: memory per device in GiB (default: the device's "
                      "memory when JAX reports it, else no check)")
  p.add_argument("overrides", nargs="*", metavar="key=value",
                 help="config overrides, e.g. train.steps=10 mesh.shape=2,2,2")


def _add_eval(sub):
  from kmlm_jax.evaluation.task_names import TASKS  # a light module: no model code
  p = sub.add_parser("eval", help="evaluation runs (XLR, probing, NER, RELX, link prediction)")
  p.add_argument("--config", required=True, metavar="FILE", help="configs/eval_*.py")
  p.add_argument("--ckpt", required=True, metavar="CKPT",
                 help="kmlm-jax checkpoint: a model checkpoint dir, WORKDIR/checkpoints/STEP, "
                      "or WORKDIR (its newest step)")
  p.add_argument("--baseline", metavar="CKPT",
                 help="a checkpoint to compare against (the same three forms)")
  p.add_argument("--tasks", metavar="T1,T2",
                 help=f"comma-separated subset of {','.join(TASKS)} (default: the config's "
                      "tasks; ner and relx need files named in the config, lp a Prix-LM "
                      "checkpoint)")
  p.add_argument("--out", default="out/eval", metavar="DIR",
                 help="results.md, results.json and plots/ (written at the end)")
  p.add_argument("--lp-splits", metavar="DIR",
                 help="task lp on Prix-LM's released link-prediction files (triples.txt, "
                      "entities.txt, filtered.txt) instead of the corpus's")
  p.add_argument("--lp-langs", metavar="L1,L2", help="with --lp-splits: the languages to test "
                 "(default: every language of triples.txt)")
  p.add_argument("--xlr-release", metavar="DIR|ZIP",
                 help="task xlr on KMLM's released XLR files (logic.zip) instead of the corpus's")


def _add_adapters(sub):
  p = sub.add_parser("adapters", help="knowledge adapters + AdapterFusion on a frozen encoder")
  ad = p.add_subparsers(dest="adapters_command", required=True)
  for name, text in (("train", "train each adapter, then the fusion (the config's stages)"),
                     ("eval", "cosine-retrieval KG completion and entity alignment vs the base"),
                     ("export", "adapters and fusion -> PyTorch state dict (AdapterHub names)")):
    c = ad.add_parser(name, help=text)
    c.add_argument("--config", required=True, metavar="FILE", help="configs/adapters_*.py")
    c.add_argument("--workdir", metavar="DIR", help="default: workdir/<config name>")
    if name == "export":
      c.add_argument("--to", required=True, metavar="DIR")
      c.add_argument("--overwrite", action="store_true")
    if name == "eval":
      c.add_argument("--dbp5l", metavar="DIR", help="KG completion on the released DBP5L "
                     "test triples (relations.txt, entity/, extended/) instead of the corpus's")
      c.add_argument("--wk3l60", metavar="DIR", help="entity alignment on the released WK3L60 "
                     "test pairs (alignment/*.csv) instead of the corpus's")
    c.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. train.adapter_steps=10 init_from=CKPT")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="kmlm-jax", description=__doc__)
  parser.add_argument("--debug", action="store_true",
                      help="print the traceback of an error as well as its one-line message")
  sub = parser.add_subparsers(dest="command", required=True)
  for add in (_add_convert, _add_init, _add_kg, _add_data, _add_train, _add_adapters, _add_eval):
    add(sub)
  return parser


def _convert(args) -> int:
  from kmlm_jax.convert import commands
  if args.from_hf:
    if not args.to or args.to_hf:
      raise InputError("--from-hf needs --to CKPT (and no --to-hf)")
    report = commands.hf_to_checkpoint(args.from_hf, args.to, verify=args.verify,
                                       overwrite=args.overwrite)
  else:
    if not args.to_hf or args.to:
      raise InputError("--from needs --to-hf DIR (and no --to)")
    report = commands.checkpoint_to_hf(args.from_ckpt, args.to_hf, verify=args.verify,
                                       overwrite=args.overwrite)
  print("\n".join(report.lines))
  if report.max_abs_diff is not None:
    print(f"max_abs_diff={report.max_abs_diff:.3g}")
  return 0


def _init(args) -> int:
  from kmlm_jax.convert import commands
  print("\n".join(commands.init_checkpoint(args.preset, args.to, seed=args.seed,
                                           overwrite=args.overwrite).lines))
  return 0


def _kg(args) -> int:
  from kmlm_jax.kg import commands
  if args.kg_command == "import-kmlm":
    from kmlm_jax.kg.released import import_command
    print(import_command(args))
  else:
    print(commands.stats(args.dir) if args.kg_command == "stats" else commands.build(args))
  return 0


def _show_info_lines() -> None:
  """kmlm_jax's INFO lines (resumed from step N, compiling) on stderr as "LEVEL name:
  message". A library imported before has put a plain stderr handler on the root logger:
  it gets the format; other handlers (a test's log capture) stay as they are."""
  form = logging.Formatter("%(levelname)s %(name)s: %(message)s")
  logging.basicConfig()
  for handler in logging.getLogger().handlers:
    if type(handler) is logging.StreamHandler:
      handler.setFormatter(form)
  logging.getLogger("kmlm_jax").setLevel(logging.INFO)


def _train(args) -> int:
  from kmlm_jax import distributed
  from kmlm_jax.experiment import load_config, preflight
  from kmlm_jax.training.loop import train
  if args.memory_budget is not None and not args.dry_run:
    raise InputError("--memory-budget needs --dry-run")
  config = load_config(args.config, args.overrides)  # every field in range
  distributed.maybe_initialize(force=args.distributed)
  if args.dry_run:
    return _dry_run(config, args.memory_budget)
  preflight(config)  # paths, input, tokenizer, mesh and batch: before models and compiles
  _show_info_lines()
  summary = train(config, args.workdir or f"workdir/{config.name}", resume=args.resume,
                  allow_schedule_change=args.allow_schedule_change)
  last = summary["history"][-1] if summary["history"] else {}
  print(f"status={summary['status']} steps={summary['steps']} "
        + " ".join(f"{k}={v:.4g}" for k, v in last.items() if k != "step"))
  return 0


def _dry_run(config, budget_gib: float | None) -> int:
  """`train --dry-run`: the device checks (no paths, no data), then the compiled step's
  report; a step that does not fit the budget raises `DoesNotFit` (exit 2)."""
  from kmlm_jax.experiment import check_devices, check_run_options
  from kmlm_jax.training import dry_run
  check_devices(config)
  check_run_options(config)
  _show_info_lines()
  report = dry_run.dry_run(config, budget_gib)
  print("\n".join(report.lines()))
  if not report.fits:
    raise dry_run.DoesNotFit(report.verdict())
  print(report.verdict())
  return 0


def _eval(args) -> int:
  import dataclasses

  from kmlm_jax.evaluation import run
  from kmlm_jax.experiment import load_config
  config = load_config(args.config, expected=run.EvalConfig)
  released = {"lp_splits": args.lp_splits, "xlr_release": args.xlr_release}
  if args.lp_langs is not None:
    if not args.lp_splits:
      raise InputError("--lp-langs goes with --lp-splits")
    released["lp_langs"] = tuple(l.strip() for l in args.lp_langs.split(",") if l.strip())
  config = dataclasses.replace(config, **{k: v for k, v in released.items() if v})
  tasks = None
  if args.tasks is not None:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
      raise InputError(f"--tasks {args.tasks!r}: no task named (known: {', '.join(run.TASKS)})")
  run.run(config, args.ckpt, args.out, baseline=args.baseline, tasks=tasks)
  print((Path(args.out) / "results.md").read_text())
  print(f"wrote {args.out}/results.json, {args.out}/results.md, {args.out}/plots/")
  return 0


def _adapters(args) -> int:
  from kmlm_jax.adapters.config import load_adapter_config
  config = load_adapter_config(args.config, args.overrides)
  _show_info_lines()
  workdir = args.workdir or f"workdir/{config.name}"
  if args.adapters_command == "train":
    from kmlm_jax.adapters.train import train
    summary = train(config, workdir)
    print(f"base: {summary['base']}; base parameters unchanged: {summary['base_unchanged']}")
    for stage in summary["stages"]:
      last = [h for h in summary["history"] if h["stage"] == stage][-1]
      print(f"stage={stage} steps={last['step']} loss={last['loss']:.4g} "
            f"in_batch_accuracy={last['accuracy']:.3f}")
    print(f"wrote {workdir}/adapters")
  elif args.adapters_command == "eval":
    from kmlm_jax.adapters.evaluate import evaluate
    results = evaluate(config, workdir, dbp5l=args.dbp5l, wk3l60=args.wk3l60)
    print(f"base: {results['base']}; pooling: {results['pooling']}")
    print(results["table"])
    print(f"wrote {workdir}/eval/results.json, {workdir}/eval/results.md")
  else:
    from kmlm_jax.adapters.export import export_run
    lines, diff = export_run(workdir, args.to, overwrite=args.overwrite)
    print("\n".join(lines))
    print(f"max_abs_diff={diff:.3g}")
    if diff > 1e-5:
      print(f"kmlm-jax adapters export: error: PyTorch differs by {diff:.3g} > 1e-5",
            file=sys.stderr)
      return 1
  return 0


def main(argv=None) -> int:
  """Runs one subcommand; every user error ends in one stderr line
  `kmlm-jax SUBCOMMAND: error: MESSAGE` and its exit code (`kmlm_jax.errors`; README,
  "Exit codes"): 1 runtime failure (a verification failed, an output cannot be written),
  2 bad input or usage, 3 non-finite loss, 130 interrupted. `--debug` adds the traceback."""
  args = build_parser().parse_args(argv)
  from kmlm_jax.convert.commands import VerifyError
  try:
    return {"convert": _convert, "init": _init, "kg": _kg, "data": _data, "train": _train,
            "adapters": _adapters, "eval": _eval}[args.command](args)
  except (KmlmError, OSError, KeyboardInterrupt) as e:
    if args.debug:
      traceback.print_exc()
    if isinstance(e, VerifyError):
      print("\n".join(e.report.lines))
    print(f"kmlm-jax {args.command}: error: {_one_line(e)}", file=sys.stderr)
    sys.stderr.flush()
    if isinstance(e, VerifyError):
      print(f"max_abs_diff={e.report.max_abs_diff:.3g}")
    return 130 if isinstance(e, KeyboardInterrupt) else getattr(e, "exit_code",
                                                                WriteError.exit_code)


def _one_line(e: BaseException) -> str:
  if isinstance(e, KeyboardInterrupt):
    return "interrupted"
  if isinstance(e, OSError) and not isinstance(e, KmlmError):  # an I/O failure, not a bug
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}"
  return " ".join(line.strip() for line in str(e).splitlines() if line.strip())


if __name__ == "__main__":
  sys.exit(main())
