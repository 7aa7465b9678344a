"""Prix-LM on the embedded sample: train, then link prediction against TransE.

  python -m kmlm_jax.prixlm_demo --out out/prixlm [--steps 400] [--beams 50]

1. Build the sample KG corpora (or reuse `--corpus DIR`).
2. Trim the real XLM-R tokenizer to the corpora, the UDHR text and the
   entity names, and append Prix-LM's tokens `[S] [P] [O] [EOS]` and one
   token per language.
3. Train a tiny model from scratch on the `prixlm` mixture (monolingual
   triples and cross-lingual links; causal loss over the object with the
   prefix-causal mask).
4. Link prediction on the held-out test triples of every language: Prix-LM
   with the trie-constrained beam search (K beams, filtered setting) and a
   TransE model trained on the same training triples; filtered Hits@1/3/10
   and MRR in the layout of the Prix-LM paper's Table 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="out/prixlm")
  parser.add_argument("--corpus", help="an existing `kg build` directory (default: build one)")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--beams", type=int, default=50)
  parser.add_argument("--transe-steps", type=int, default=2000)
  parser.add_argument("--max-queries", type=int, default=None, help="per language (tests)")
  args = parser.parse_args(argv)

  import numpy as np

  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.demo import corpus_texts, run_config
  from kmlm_jax.evaluation import lp_eval
  from kmlm_jax.evaluation import link_prediction as lp
  from kmlm_jax.kg.corpus_dir import CorpusDir
  from kmlm_jax.kg.sample import KMLM_LANGUAGES, build_sample_corpora
  from kmlm_jax.models.kge import KGEConfig
  from kmlm_jax.text import prixlm
  from kmlm_jax.text.trim import trim_tokenizer_json
  from kmlm_jax.text.vocab import add_tokens_to_tokenizer_json, default_vocab_path, load_vocab
  from kmlm_jax.training.loop import train

  start = time.perf_counter()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  corpus = Path(args.corpus) if args.corpus else out / "kg"
  if not args.corpus:
    print("1/4 building the sample KG corpora ...", flush=True)
    build_sample_corpora(corpus, overwrite=True)
  corpus_dir = CorpusDir(corpus)
  langs = list(corpus_dir.languages)

  print("2/4 trimming the tokenizer and adding the Prix-LM tokens ...", flush=True)

  def texts():
    yield from corpus_texts(corpus, [l for l in langs if l in KMLM_LANGUAGES])
    for lang in langs:
      path = corpus_dir.eval_path("lp", f"{lang}.entities.tsv")
      yield from (name for name, _ in lp_eval.read_tsv(path, 2))

  vocab_path = out / "vocab" / "tokenizer.json"
  trim_tokenizer_json(default_vocab_path(), texts(), out / "vocab" / "trimmed.json")
  add_tokens_to_tokenizer_json(out / "vocab" / "trimmed.json", prixlm.added_tokens(langs),
                               vocab_path)
  vocab = load_vocab(str(vocab_path))

  print(f"3/4 training Prix-LM ({args.steps} steps x {args.batch_size} rows) ...", flush=True)
  config = run_config("prixlm-tiny", "prixlm", corpus, vocab_path, vocab.vocab_size, args.steps,
                      args.batch_size, out / "token_cache")
  t = time.perf_counter()
  summary = train(config, out / "train", progress=True)
  train_s = time.perf_counter() - t

  print(f"4/4 link prediction (Prix-LM beam search K={args.beams}, TransE) ...", flush=True)
  _, params, _ = mc.load_model_checkpoint(out / "train" / "model")
  model = mc.build_model(config.model.replace(dropout_rate=0.0, attention_dropout_rate=0.0), params)
  t = time.perf_counter()
  ranks, info = {"Prix-LM": {}}, {}
  for lang in langs:
    ranks["Prix-LM"][lang], info[lang] = lp_eval.prixlm_ranks(
        model, vocab, corpus, lang, num_beams=args.beams, max_queries=args.max_queries)
  prixlm_s = time.perf_counter() - t
  t = time.perf_counter()
  transe = lp_eval.kge_ranks(corpus, langs, KGEConfig(model="transe", steps=args.transe_steps))
  ranks["TransE"] = {l: r[:args.max_queries] for l, r in transe.items()}
  transe_s = time.perf_counter() - t

  table = lp_eval.results_table(ranks, langs)
  (out / "results.md").write_text(table)
  queries = sum(i["queries"] for i in info.values())
  (out / "results.json").write_text(json.dumps(
      {m: {l: r.tolist() for l, r in v.items()} for m, v in ranks.items()}))
  print("\n" + table)
  print(f"{queries} queries in {len(langs)} languages; Prix-LM search {prixlm_s:.0f} s "
        f"({queries / prixlm_s:.1f} queries/s), TransE {transe_s:.0f} s, training {train_s:.0f} s")
  history = summary["history"]
  m = {k: lp.metrics(np.concatenate(list(v.values()))) for k, v in ranks.items()}
  print(f"loss_first={history[0]['loss']:.3f} loss_last={history[-1]['loss']:.3f} "
        f"prixlm_hits1={m['Prix-LM']['hits@1']:.3f} prixlm_mrr={m['Prix-LM']['mrr']:.3f} "
        f"transe_hits1={m['TransE']['hits@1']:.3f} transe_mrr={m['TransE']['mrr']:.3f} "
        f"total_s={time.perf_counter() - start:.0f}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
