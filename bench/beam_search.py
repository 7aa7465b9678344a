"""Prix-LM constrained beam search: jitted CSR-trie search vs the paper's
Algorithm 1 (reference), and a 2M-entity trie.

Part 1 (same CPU, same model, same queries): a random `tiny` Prix-LM
(XLM-R flavour, hidden 64, 2 layers, 4 heads, FFN 128, vocabulary
`--vocab`), `--entities` random names of 2-6 tokens, K = 50. The reference
(`kmlm_jax.decoding.reference.ReferenceSearch`: one uncached full forward
per hypothesis, dict trie, Python beams) runs `--ref-queries` queries one
by one; our `BeamSearch` runs the same queries in one batch, then
`--queries` queries in batches of `--batch` (throughput). Compilation is
excluded from both timings. Entity lists must be identical and scores
within 1e-4 (asserted).

Part 2: a synthetic trie of `--big` (2M) names, lengths uniform in 2..8,
tokens uniform over a 250k vocabulary. The build runs in a child process
(build seconds, peak RSS = VmHWM of that process, including the input
arrays) and saves an `.npz`; the parent loads it and measures per-query
latency at K = 50 with a `tiny` model whose vocabulary is XLM-R's size plus
the Prix-LM special tokens (250,008), for batch 1 and batch `--big-batch`.

  python bench/beam_search.py [--entities 5000] [--vocab 1000] [--ref-queries 8]
                              [--queries 256] [--batch 32] [--big 2000000] [--big-batch 8]

Ends with one `key=value` line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

BIG_VOCAB = 250_002 + 6  # XLM-R pieces + [S] [P] [O] [EOS] + 2 language tokens


def _peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def random_names(count: int, vocab: int, low: int, high: int, seed: int):
  """(flat tokens, lengths): `count` names of low..high tokens drawn from [5, vocab - 10)."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(low, high + 1, count)
  flat = rng.integers(5, vocab - 10, int(lengths.sum()))
  return flat, lengths


def child_build(args) -> None:
  """Builds the big trie in this (fresh) process and prints a JSON report."""
  from kmlm_jax.decoding.trie import build_trie_flat
  flat, lengths = random_names(args.big, BIG_VOCAB, 2, 8, seed=1)
  base = _peak_rss_gb()
  start = time.perf_counter()
  trie = build_trie_flat(flat, lengths, BIG_VOCAB - 1, duplicates="first")
  seconds = time.perf_counter() - start
  trie.save(args.child_out)
  print(json.dumps({"build_s": seconds, "nbytes": trie.nbytes, "peak_rss_gb": _peak_rss_gb(),
                    "base_rss_gb": base, "states": trie.num_states,
                    "max_branch": trie.max_branch, "root_degree": trie.root_degree,
                    "branch_below_root": trie.max_branch_below_root,
                    "dropped": int(trie.dropped.shape[0]), "input_mb": (flat.nbytes +
                                                                      lengths.nbytes) / 1e6}))


def _model(vocab: int, seed: int):
  from flax import nnx
  from kmlm_jax.config import preset
  from kmlm_jax.models.encoder import Encoder
  config = preset("tiny", vocab_size=vocab, max_position_embeddings=64, dropout_rate=0.0,
                  attention_dropout_rate=0.0, initializer_range=0.2)
  return Encoder(config, rngs=nnx.Rngs(seed))


def _queries(config, count: int, seed: int):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(6, 13, count).astype(np.int32)
  ids = rng.integers(5, config.vocab_size - 10, (count, 12)).astype(np.int32)
  ids[np.arange(12)[None] >= lengths[:, None]] = config.pad_token_id
  return ids, lengths


def _timed_batches(search, ids, lengths, batch: int) -> float:
  start = time.perf_counter()
  for lo in range(0, ids.shape[0], batch):
    search(ids[lo:lo + batch], lengths[lo:lo + batch])
  return time.perf_counter() - start


def part_reference(args) -> dict:
  from kmlm_jax.decoding.beam_search import BeamSearch
  from kmlm_jax.decoding.reference import ReferenceSearch
  from kmlm_jax.decoding.trie import build_trie_flat

  model = _model(args.vocab, 0)
  eos = args.vocab - 1
  flat, lengths = random_names(args.entities, args.vocab, 2, 6, seed=0)
  trie = build_trie_flat(flat, lengths, eos, duplicates="first")
  names = np.split(flat, np.cumsum(lengths)[:-1])
  names = [names[i].tolist() for i in range(len(names))]
  ids, plen = _queries(model.config, max(args.queries, args.ref_queries), seed=0)
  k = 50

  search = BeamSearch(model, trie, num_beams=k)
  start = time.perf_counter()
  search(ids[:args.ref_queries], plen[:args.ref_queries])
  compile_s = time.perf_counter() - start
  ours_small_s = _timed_batches(search, ids[:args.ref_queries], plen[:args.ref_queries],
                                args.ref_queries)
  ours = search(ids[:args.ref_queries], plen[:args.ref_queries])
  search(ids[:args.batch], plen[:args.batch])  # compile the throughput shape
  ours_s = _timed_batches(search, ids[:args.queries], plen[:args.queries], args.batch)

  reference = ReferenceSearch(model, names, eos, num_beams=k, length=12 + trie.max_len)
  reference.next_logp(ids[0, :plen[0]].tolist(), [])  # compile
  forwards = [0]
  next_logp = reference.next_logp

  def counted(*a):
    forwards[0] += 1
    return next_logp(*a)

  reference.next_logp = counted
  start = time.perf_counter()
  ref = [reference(ids[i, :plen[i]].tolist()) for i in range(args.ref_queries)]
  ref_s = time.perf_counter() - start

  ref_entities = np.stack([e for e, _ in ref])
  ref_scores = np.stack([s for _, s in ref])
  identical = bool((ref_entities == ours.entities).all() and np.allclose(
      ref_scores, ours.scores, atol=1e-4, rtol=0))
  return {"compile_s": compile_s, "ref_qps": args.ref_queries / ref_s,
          "ours_qps_small": args.ref_queries / ours_small_s, "ours_qps": args.queries / ours_s,
          "identical": identical, "states": trie.num_states, "root_degree": trie.root_degree,
          "found": float((ours.entities >= 0).sum(1).mean()),
          # Hypotheses the reference ran a forward for / rows our loop computed, per query.
          "ref_forwards": forwards[0] / args.ref_queries, "ours_rows": 1 + ours.steps * k}


def part_big(args, tmp: str) -> dict:
  out = os.path.join(tmp, "trie2m.npz")
  proc = subprocess.run([sys.executable, __file__, "--child-out", out, "--big", str(args.big)],
                        capture_output=True, text=True, check=True)
  build = json.loads(proc.stdout.strip().splitlines()[-1])

  from kmlm_jax.decoding.beam_search import BeamSearch
  from kmlm_jax.decoding.trie import Trie
  start = time.perf_counter()
  trie = Trie.load(out)
  load_s = time.perf_counter() - start
  model = _model(BIG_VOCAB, 1)
  reps = 8
  ids, plen = _queries(model.config, reps * args.big_batch, seed=1)
  search = BeamSearch(model, trie, num_beams=50)
  latency = {}
  for batch in (1, args.big_batch):
    search(ids[:batch], plen[:batch])  # compile
    runs = max(1, reps // batch)
    start = time.perf_counter()
    for r in range(runs):
      result = search(ids[r * batch:(r + 1) * batch], plen[r * batch:(r + 1) * batch])
      assert (result.entities[:, 0] >= 0).all()
    latency[batch] = (time.perf_counter() - start) / runs
  return {**build, "load_s": load_s, "latency_b1_ms": latency[1] * 1e3,
          "latency_batch_ms": latency[args.big_batch] * 1e3, "rss_after_gb": _peak_rss_gb()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--entities", type=int, default=5000)
  parser.add_argument("--vocab", type=int, default=1000)
  parser.add_argument("--ref-queries", type=int, default=8)
  parser.add_argument("--queries", type=int, default=256)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--big", type=int, default=2_000_000)
  parser.add_argument("--big-batch", type=int, default=8)
  parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child_out:
    child_build(args)
    return

  small = part_reference(args)
  with tempfile.TemporaryDirectory() as tmp:
    big = part_big(args, tmp)
  speedup = small["ours_qps"] / small["ref_qps"]
  speedup_same = small["ours_qps_small"] / small["ref_qps"]

  print(f"\nPart 1: tiny XLM-R-flavour model (hidden 64, 2 layers, vocabulary {args.vocab}), "
        f"{args.entities:,} entities ({small['states']:,} trie states, root degree "
        f"{small['root_degree']}), K=50, CPU ({os.cpu_count()} cores visible)\n")
  print("| search | queries | batch | queries/s | speed-up | identical |")
  print("|---|---:|---:|---:|---:|---|")
  ident = str(small["identical"]).lower()
  print(f"| reference (Algorithm 1, one forward per hypothesis) | {args.ref_queries} | 1 | "
        f"{small['ref_qps']:.2f} | 1x | - |")
  print(f"| jitted CSR-trie search, KV cache | {args.ref_queries} | {args.ref_queries} | "
        f"{small['ours_qps_small']:.1f} | {speedup_same:.0f}x | {ident} |")
  print(f"| jitted CSR-trie search, KV cache | {args.queries} | {args.batch} | "
        f"{small['ours_qps']:.1f} | {speedup:.0f}x | (same code) |")
  print(f"(one-off compilation of the jitted search: {small['compile_s']:.1f} s; entities "
        f"returned per query: {small['found']:.1f}. Both sides score the same hypotheses and "
        f"the same LM head per hypothesis; the cache saves re-encoding the ~19-token "
        f"sequence (about 10x fewer FLOPs here), batching gives the rest.)")
  print(f"(per query on the first {args.ref_queries} queries: the reference ran "
        f"{small['ref_forwards']:.0f} forwards; the search computed {small['ours_rows']} rows, "
        f"all K beams at every step, including beams already out.)")

  print(f"\nPart 2: synthetic trie, {args.big:,} names of 2-8 tokens over {BIG_VOCAB:,} tokens; "
        f"tiny model with the full {BIG_VOCAB:,}-token vocabulary, K=50\n")
  print("| measure | value |")
  print("|---|---:|")
  rows = [("trie states / edges", f"{big['states']:,} / {big['states'] - 1:,}"),
          ("max out-degree (root) / below root", f"{big['max_branch']:,} / "
                                                 f"{big['branch_below_root']}"),
          ("duplicate names dropped (duplicates='first')", f"{big['dropped']}"),
          ("build seconds (vectorized numpy)", f"{big['build_s']:.2f}"),
          ("trie arrays MB", f"{big['nbytes'] / 1e6:.0f}"),
          ("build process peak RSS GB (incl. input, interpreter)", f"{big['peak_rss_gb']:.2f}"),
          ("  of which before the build (input names + numpy)", f"{big['base_rss_gb']:.2f}"),
          ("load .npz seconds", f"{big['load_s']:.2f}"),
          ("latency per query, batch 1, ms", f"{big['latency_b1_ms']:.0f}"),
          (f"latency per batch of {args.big_batch}, ms", f"{big['latency_batch_ms']:.0f}"),
          (f"per query at batch {args.big_batch}, ms",
           f"{big['latency_batch_ms'] / args.big_batch:.0f}"),
          ("bench process peak RSS GB", f"{big['rss_after_gb']:.2f}")]
  for name, value in rows:
    print(f"| {name} | {value} |")
  print(f"speedup_vs_reference={speedup:.0f} speedup_same_batch={speedup_same:.0f} "
        f"identical={ident} ref_qps={small['ref_qps']:.2f} ours_qps={small['ours_qps']:.1f} "
        f"ref_forwards_per_query={small['ref_forwards']:.0f} ours_rows_per_query="
        f"{small['ours_rows']} trie_2m_build_s={big['build_s']:.2f} trie_2m_mb={big['nbytes'] / 1e6:.0f} "
        f"trie_2m_build_peak_rss_gb={big['peak_rss_gb']:.2f} "
        f"latency_ms_k50_2m={big['latency_b1_ms']:.0f} "
        f"latency_ms_k50_2m_per_query_batch{args.big_batch}="
        f"{big['latency_batch_ms'] / args.big_batch:.0f}")
  if not small["identical"]:
    sys.exit(1)


if __name__ == "__main__":
  main()
