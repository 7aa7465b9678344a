"""The end-to-end demo on the embedded default (the README's `make demo`).

1. Build the knowledge corpora of the embedded sample KG (`kg build --sample`).
2. Trim the real XLM-R tokenizer to the pieces of those corpora and the
   UDHR text (a 2-layer, width-128 model could not afford 250,002
   embedding rows on a CPU; the trimmed tokenizer segments this text exactly
   as the full one).
3. Train a tiny model from scratch twice with the same steps and batch
   size (the same compute): KMLM-Mix (text + code-switched + parallel +
   reasoning) and MLM-only (text only).
4. Evaluate both: MLM accuracy per stream on fresh masks of each stream,
   held-out cloze probes and held-out XLR (zero-shot, see
   `evaluation/zero_shot.py`).
5. Export the KMLM model to a transformers directory and verify it against
   PyTorch.
6. Print the results table (also `results.json` and `results.md`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from importlib import resources
from pathlib import Path

import numpy as np

STREAM_TASKS = {"mlm": "cc100", "knowledge (code-switched)": "kmlm_knowledge_cs",
                "knowledge (parallel)": "kmlm_knowledge_parallel", "reasoning": "kmlm_reasoning"}


def corpus_texts(corpus: Path, languages):
  import tensorflow as tf

  from kmlm_jax.kg import records
  for f in sorted(corpus.glob("corpora/*/*.tfrecord")):
    for r in tf.data.TFRecordDataset(str(f)).as_numpy_iterator():
      yield records.from_example(r).text(mask_token=" ")
  udhr = Path(str(resources.files("kmlm_jax.text").joinpath("data/udhr")))
  for lang in languages:
    yield from (udhr / f"{lang}.txt").read_text(encoding="utf-8").splitlines()


def trim_vocab(corpus: Path, out: Path, languages) -> int:
  from kmlm_jax.text.trim import trim_tokenizer_json
  from kmlm_jax.text.vocab import default_vocab_path
  return trim_tokenizer_json(default_vocab_path(), corpus_texts(corpus, languages),
                             out / "tokenizer.json")


def run_config(name: str, mixture: str, corpus: Path, tokenizer: Path, vocab_size: int,
               steps: int, batch: int, cache_dir: Path):
  """configs/tiny.py training `steps` steps of `batch` rows on `mixture`."""
  from kmlm_jax.config import override
  from kmlm_jax.experiment import load_config
  base = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.py")
  return dataclasses.replace(override(base, [
      f"model.vocab_size={vocab_size}", f"data.vocab={tokenizer}",
      f"data.corpus_dir={corpus}", f"data.cache_dir={cache_dir}",
      f"data.mixture={mixture}", f"train.steps={steps}",
      f"data.batch_size={batch}", f"train.checkpoint_every={steps}",
      f"train.log_every={max(1, steps // 20)}", f"train.warmup_steps={max(1, steps // 10)}"]),
      name=name)


def stream_accuracy(config, params, batches: int) -> dict[str, float]:
  """MLM accuracy of each stream on fresh masks (seed 12345) of its own task."""
  import jax

  from kmlm_jax.training.data import make_batches
  from kmlm_jax.training.loop import pretraining_trainer
  trainer = pretraining_trainer(config)
  params = jax.device_put(params, trainer.state_shardings.params)
  out = {}
  for label, task in STREAM_TASKS.items():
    data = dataclasses.replace(config.data, mixture=task, seed=12345)
    it = make_batches(data, config.model.vocab_size, 0, 1)
    correct = total = 0.0
    for _ in range(batches):
      m = jax.device_get(trainer.evaluate(params, next(it)))
      correct += float((m["term_accuracy"] * m["count"]).sum())
      total += float(m["count"].sum())
    out[label] = correct / max(total, 1.0)
  return out


def evaluate(config, workdir: Path, corpus: Path, quick: bool, every: tuple[int, int] = (1, 1)
             ) -> dict:
  """Stream accuracy, held-out probes and XLR of WORKDIR/model; `every`: (probe, XLR) strides
  of the subsets evaluated (`quick`: (40, 20))."""
  from flax import nnx

  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.evaluation import zero_shot
  from kmlm_jax.kg.corpus_dir import CorpusDir
  from kmlm_jax.text.vocab import load_vocab
  _, params, _ = mc.load_model_checkpoint(workdir / "model")
  model = mc.build_model(config.model.replace(dropout_rate=0.0, attention_dropout_rate=0.0), params)
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(state)
  corpus = CorpusDir(corpus)
  graph = corpus.graph()
  vocab = load_vocab(config.data.vocab)
  read = lambda p: [json.loads(l) for l in p.read_text(encoding="utf-8").splitlines()]
  probes, xlr = read(corpus.eval_path("probes.jsonl")), read(corpus.eval_path("xlr", "test.jsonl"))
  every = (40, 20) if quick else every
  probes, xlr = probes[::every[0]], xlr[::every[1]]
  # Probe sentences are short; XLR items hold up to five sentences.
  short = zero_shot.Scorer(graphdef, params, vocab, length=48, batch=128)
  long = zero_shot.Scorer(graphdef, params, vocab, length=128, batch=32)
  return {"stream_accuracy": stream_accuracy(config, params, 2 if quick else 4),
          "probes": zero_shot.probe_accuracy(short, graph, probes, max_distractors=10),
          "xlr": zero_shot.xlr_accuracy(long, graph, xlr),
          "num_probes": len(probes), "num_xlr": len(xlr)}


def results_table(results: dict, names: tuple[str, str]) -> str:
  a, b = (results[n]["eval"] for n in names)
  rows = [("final MLM-stream training loss (text, both runs)",
           results[names[0]]["final_mlm_loss"], results[names[1]]["final_mlm_loss"])]
  for label in STREAM_TASKS:
    rows.append((f"MLM accuracy, {label} stream", a["stream_accuracy"][label],
                 b["stream_accuracy"][label]))
  rows.append((f"cloze probes, held out (acc@1 of 11 candidates, {a['num_probes']} probes)",
               a["probes"]["avg"], b["probes"]["avg"]))
  rows.append((f"XLR test, zero-shot (acc, {a['num_xlr']} items, chance 0.167)",
               a["xlr"]["avg"], b["xlr"]["avg"]))
  lines = [f"| metric | {names[0]} | {names[1]} | difference |", "|---|---|---|---|"]
  for label, x, y in rows:
    lines.append(f"| {label} | {x:.3f} | {y:.3f} | {y - x:+.3f} |")
  langs = [l for l in b["probes"] if l != "avg"]
  lines += ["", "| per language | " + " | ".join(langs) + " |",
            "|---" * (len(langs) + 1) + "|"]
  for name in names:
    ev = results[name]["eval"]
    for metric in ("probes", "xlr"):
      lines.append(f"| {metric}, {name} | " + " | ".join(f"{ev[metric].get(l, float('nan')):.2f}"
                                                     for l in langs) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="out/demo")
  parser.add_argument("--steps", type=int, default=450)
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--quick", action="store_true", help="a few steps and items (tests)")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  from kmlm_jax.convert import commands
  from kmlm_jax.kg.sample import KMLM_LANGUAGES, build_sample_corpora
  from kmlm_jax.training.loop import train

  start = time.perf_counter()
  out = Path(args.out)
  shutil.rmtree(out, ignore_errors=True)
  out.mkdir(parents=True)
  timings = {}
  print("1/5 building the sample KG corpora ...", flush=True)
  manifest = build_sample_corpora(out / "kg", overwrite=True)
  timings["corpora_s"] = time.perf_counter() - start
  print("2/5 trimming the XLM-R tokenizer to the corpora ...", flush=True)
  vocab_size = trim_vocab(out / "kg", out / "vocab", KMLM_LANGUAGES)
  print(f"    {vocab_size:,} of 250,002 pieces kept", flush=True)
  runs = {"MLM-only": "cc100", "KMLM-Mix": "kmlm_mix"}
  results = {}
  for name, mixture in runs.items():
    print(f"3/5 training {name} ({args.steps} steps x {args.batch_size} rows) ...", flush=True)
    config = run_config(name, mixture, out / "kg", out / "vocab" / "tokenizer.json", vocab_size,
                        args.steps, args.batch_size, out / "token_cache")
    t = time.perf_counter()
    summary = train(config, out / name, progress=True)
    timings[f"train_{name}_s"] = time.perf_counter() - t
    history = summary["history"]
    print(f"4/5 evaluating {name} ...", flush=True)
    t = time.perf_counter()
    mlm = [h["mlm/loss"] for h in history if "mlm/loss" in h]
    results[name] = {"first_loss": history[0]["loss"], "final_loss": history[-1]["loss"],
                     "final_mlm_loss": float(np.mean(mlm[-5:])),
                     "eval": evaluate(config, out / name, out / "kg", args.quick)}
    timings[f"eval_{name}_s"] = time.perf_counter() - t
  print("5/5 exporting KMLM-Mix to a transformers directory and verifying ...", flush=True)
  report = commands.checkpoint_to_hf(out / "KMLM-Mix" / "model", out / "hf", verify=True)
  print("\n".join("    " + l for l in report.lines))

  table = results_table(results, tuple(runs))
  timings["total_s"] = time.perf_counter() - start
  corpora = {k: manifest[k] for k in ("entities", "triples", "cycles3", "cycles4")}
  (out / "results.json").write_text(json.dumps({"results": results, "timings": timings,
                                                "corpora": corpora, "vocab_size": vocab_size},
                                               indent=1))
  (out / "results.md").write_text(table + "\n")
  print("\n" + table + "\n")
  print("timings: " + " ".join(f"{k}={v:.0f}" for k, v in timings.items()))
  kmlm, mlm = results["KMLM-Mix"], results["MLM-only"]
  falls = kmlm["final_loss"] < kmlm["first_loss"] and mlm["final_loss"] < mlm["first_loss"]
  print(f"loss_falls={str(falls).lower()} kmlm_final_loss={kmlm['final_loss']:.3f} "
        f"probe_acc_kmlm={kmlm['eval']['probes']['avg']:.3f} "
        f"probe_acc_mlm_only={mlm['eval']['probes']['avg']:.3f} "
        f"xlr_acc_kmlm={kmlm['eval']['xlr']['avg']:.3f} "
        f"xlr_acc_mlm_only={mlm['eval']['xlr']['avg']:.3f} "
        f"hf_max_abs_diff={report.max_abs_diff:.2e} total_s={timings['total_s']:.0f}")
  return 0 if falls and report.ok() else 1


if __name__ == "__main__":
  raise SystemExit(main())
