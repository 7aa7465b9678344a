"""Input throughput per stream: packed rows per CPU-second, against the former pipeline.

For each stream of the embedded sample (text, code-switched, parallel,
reasoning, Prix-LM triples) at T=128, P=20:
  - the input of `kmlm_jax.data.input` in the training process: packed rows
    per CPU-second (process CPU time, all threads) over at least 20,000 rows
    after warm-up, and the packing efficiency (real tokens / row slots);
  - the same with 2 worker processes: rows per wall-second and rows per
    CPU-second counting the CPU time of the main process and both workers;
  - the former pipeline (seqio tasks tokenizing and masking each example in
    Python, then the per-example first-fit packer; `bench/old_pipeline/`) in
    the same process, over fewer rows (it is slow): its rows per CPU-second
    and the ratio.

  python bench/data_pipeline.py [--rows 20000] [--old-rows 1000]

The token caches are built first if missing (not timed).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from kmlm_jax.config import DataConfig
from kmlm_jax.data import packing
from kmlm_jax.data.input import Batches
from kmlm_jax.kg.corpus_dir import CorpusDir
from kmlm_jax.kg.sample import KMLM_LANGUAGES
from kmlm_jax.text import prixlm
from kmlm_jax.text.vocab import add_tokens_to_tokenizer_json, default_vocab_path
from kmlm_jax.training.data import prepare_input, udhr_pattern

T, P, B = 128, 20, 64
STREAMS = {"text": ("cc100", "old_cc100"),
           "code-switched": ("kmlm_knowledge_cs", "old_kmlm_knowledge_cs"),
           "parallel": ("kmlm_knowledge_parallel", "old_kmlm_knowledge_parallel"),
           "reasoning": ("kmlm_reasoning", "old_kmlm_reasoning"),
           "Prix-LM triples": ("prixlm_triples", "old_prixlm_triples")}


def _cpu(processes) -> float:
  total = 0.0
  for p in processes:
    try:
      t = p.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


def new_rate(config: DataConfig, rows: int, workers: int) -> dict:
  spec = prepare_input(config, progress=False)
  it = Batches(spec, workers=workers)
  for _ in range(4):  # warm-up: the first block, worker start-up
    next(it)
  packed0 = it.stats["rows"]
  me = psutil.Process()
  children = me.children(recursive=True)
  cpu0, wall0 = _cpu([me] + children), time.perf_counter()
  steps = math.ceil(rows / B)
  for _ in range(steps):
    next(it)
  cpu, wall = _cpu([me] + children) - cpu0, time.perf_counter() - wall0
  it.close()
  assert it.stats["rows"] - packed0 >= steps * B * 0.9, "the window must pack what it consumes"
  return {"rows": steps * B, "rows_per_cpu_s": steps * B / cpu, "rows_per_s": steps * B / wall,
          "efficiency": packing.efficiency(it.stats, T), "processes": 1 + len(children)}


def old_rate(task: str, rows: int) -> dict:
  import seqio
  from old_pipeline import packing as old_packing
  ds = seqio.get_mixture_or_task(task).get_dataset({"input_ids": T, "targets": T},
                                                   split="train", shuffle=True, seed=0)
  it = ds.as_numpy_iterator()
  for _ in range(200):  # warm-up: shuffle buffer, tokenizer load
    next(it)
  spec = old_packing.PackSpec(T, P, pad_id=1, position_offset=2, pad_position=1)
  packer, made = old_packing.Packer(spec), 0
  cpu0 = time.process_time()
  while made < rows:
    e = next(it)
    made += len(packer.add({"input_ids": e["input_ids"], "targets": e["targets"],
                            "loss_mask": e["loss_mask"].astype(bool),
                            "stream": int(e["stream"])}))
  return {"rows": made, "rows_per_cpu_s": made / (time.process_time() - cpu0)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--rows", type=int, default=20000)
  parser.add_argument("--old-rows", type=int, default=1000)
  parser.add_argument("--workdir", default=None, help="where the Prix-LM vocabulary is written")
  args = parser.parse_args()
  work = Path(args.workdir or tempfile.mkdtemp(prefix="kmlm-bench-"))
  corpus = CorpusDir.sample()
  pvocab = work / "prixlm" / "tokenizer.json"
  pvocab.parent.mkdir(parents=True, exist_ok=True)
  add_tokens_to_tokenizer_json(default_vocab_path(), prixlm.added_tokens(corpus.languages),
                               pvocab)
  import old_pipeline.tasks as old_tasks
  old_tasks.register(str(corpus.path), udhr_pattern(), default_vocab_path(), KMLM_LANGUAGES, T,
                     prixlm_vocab=str(pvocab))

  print("| stream | rows/CPU-s (1 process) | packing efficiency | rows/s (2 workers) | "
        "rows/CPU-s (2 workers, all processes) | former pipeline rows/CPU-s | speed-up |")
  print("|---|---|---|---|---|---|---|")
  figures = {}
  for label, (task, old_task) in STREAMS.items():
    vocab = str(pvocab) if task.startswith("prixlm") else None
    # One input shard: every block is packed inside the measured window (with many
    # shards, the first blocks of all of them would be packed during warm-up).
    config = DataConfig(mixture=task, seq_length=T, max_predictions=P, batch_size=B, vocab=vocab,
                        input_shards=1)
    inline = new_rate(config, args.rows, workers=0)
    pooled = new_rate(config, args.rows, workers=2)
    old = old_rate(old_task, args.old_rows)
    ratio = inline["rows_per_cpu_s"] / old["rows_per_cpu_s"]
    figures[label] = (inline, pooled, old, ratio)
    print(f"| {label} | {inline['rows_per_cpu_s']:,.0f} | {inline['efficiency']:.1%} | "
          f"{pooled['rows_per_s']:,.0f} | {pooled['rows_per_cpu_s']:,.0f} "
          f"({pooled['processes']} processes) | {old['rows_per_cpu_s']:,.0f} | {ratio:,.0f}x |",
          flush=True)
  # Prix-LM's loss covers about a fifth of its tokens (object and [EOS]): at P=20 the
  # prediction budget, not T, fills a row. Its efficiency with P=32 (the configs' value):
  wide = new_rate(DataConfig(mixture="prixlm_triples", seq_length=T, max_predictions=32,
                             batch_size=B, vocab=str(pvocab), input_shards=1), 2000, workers=0)
  print(f"\nPrix-LM triples with P=32: packing efficiency {wide['efficiency']:.1%}")
  print(f"(new input: {args.rows:,}+ rows per measurement after warm-up; former pipeline: "
        f"{args.old_rows:,} rows)")
  slowest = min(f[0]["rows_per_cpu_s"] for f in figures.values())
  keys = {"text": "text", "code-switched": "cs", "parallel": "parallel",
          "reasoning": "reasoning", "Prix-LM triples": "triples"}
  line = " ".join(f"{keys[k]}_rows_per_cpu_s={f[0]['rows_per_cpu_s']:.0f}"
                  for k, f in figures.items())
  print(f"{line} min_speedup={min(f[3] for f in figures.values()):.0f} "
        f"min_efficiency={min(f[0]['efficiency'] for f in figures.values()):.3f} "
        f"min_rows_per_cpu_s={slowest:.0f}")


if __name__ == "__main__":
  main()
