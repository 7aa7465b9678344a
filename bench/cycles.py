"""Cycle mining (kmlm_jax.kg.cycles): seconds, peak memory, and speed-up over
the paper's per-root Python algorithm.

Big graph: a seeded Chung-Lu power-law KG, `--nodes` entities (default 1M)
and `--edges` distinct undirected entity pairs (default 5M), expected degree
~ rank^(-1/(gamma-1)) with gamma 2.5, capped at `--max-degree` (10,000) so
the diamond count stays in the tens of millions (an edge on t triangles
gives t(t-1)/2 diamonds). Each pair becomes one triple with a random
direction and a Zipf-distributed relation (822 relations); `--extra` (5%)
of the pairs get a second triple (other relation or reversed direction),
so triples = edges * 1.05 and the miner has duplicates to collapse.

Each measured step runs in a fresh child process that loads the triples
from a .npy file and reports its wall time and VmHWM (peak RSS of that
process, interpreter + numpy + input included):
  triangles  simple graph + triangle listing (max_diamonds=0)
  count      count_cycles (exact counts, nothing materialized)
  mine       mine_cycles: all triangles and all diamonds, or a seeded sample
             of `--max-diamonds` when the count is above it (said in the table)

Small graph (`--small-nodes`, `--small-edges`): the paper's per-root Python
algorithm (neighbour pairs -> triangles; neighbours of B for each triangle
A, B, C -> 4-cycles; a set of edge sets for dedup) against mine_cycles:
identical sets of cycles and the speed-up.

  python bench/cycles.py [--nodes 1000000] [--edges 5000000] [--small-nodes 20000]
                         [--small-edges 100000] [--max-diamonds 50000000]

Ends with one `key=value` line; the `_1m` keys refer to the big graph.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from kmlm_jax.kg.cycles import count_cycles, mine_cycles

NUM_RELATIONS = 822


# ---------------------------------------------------------------- graphs


def expected_degrees(nodes: int, edges: int, gamma: float, max_degree: float) -> np.ndarray:
  """[nodes] Chung-Lu weights summing to 2 * edges, largest first, capped."""
  w = np.arange(1, nodes + 1, dtype=np.float64) ** (-1.0 / (gamma - 1.0))
  for _ in range(100):  # capping moves the scale: iterate to a fixed point
    w *= 2 * edges / w.sum()
    if w[0] <= max_degree * 1.001:
      break
    np.minimum(w, max_degree, out=w)
  return w


def power_law_pairs(nodes: int, edges: int, gamma: float, max_degree: float,
                    rng: np.random.Generator) -> np.ndarray:
  """[edges, 2] distinct undirected pairs (u < v), no self-loops."""
  cdf = np.cumsum(expected_degrees(nodes, edges, gamma, max_degree))
  cdf /= cdf[-1]
  ids = rng.permutation(nodes)  # hubs get random ids
  keys = np.zeros(0, np.int64)
  while len(keys) < edges:
    k = int((edges - len(keys)) * 1.15) + 1000
    a = ids[np.searchsorted(cdf, np.sort(rng.random(k)))]
    b = ids[np.searchsorted(cdf, np.sort(rng.random(k)))]
    a = a[rng.permutation(k)]
    keep = a != b
    u, v = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    keys = np.unique(np.concatenate([keys, u.astype(np.int64) * nodes + v]))
  keys = keys[np.sort(rng.choice(len(keys), edges, replace=False))]
  return np.stack([keys // nodes, keys % nodes], axis=1)


def power_law_kg(nodes: int, edges: int, gamma: float, max_degree: float, extra: float,
                 seed: int) -> np.ndarray:
  """int32 [M, 3] unique triples, rows shuffled (see the module docstring)."""
  rng = np.random.default_rng(seed)
  pairs = power_law_pairs(nodes, edges, gamma, max_degree, rng)
  rel_cdf = np.cumsum(np.arange(1, NUM_RELATIONS + 1, dtype=np.float64) ** -1.2)
  rel = np.searchsorted(rel_cdf / rel_cdf[-1], rng.random(edges))
  flip = rng.random(edges) < 0.5
  h = np.where(flip, pairs[:, 1], pairs[:, 0])
  t = np.where(flip, pairs[:, 0], pairs[:, 1])
  # A second triple on some pairs: reversed, or the same direction with another relation.
  more = rng.choice(edges, int(extra * edges), replace=False)
  rev = rng.random(len(more)) < 0.5
  h2 = np.where(rev, t[more], h[more])
  t2 = np.where(rev, h[more], t[more])
  r2 = np.where(rev, rng.integers(0, NUM_RELATIONS, len(more)),
                (rel[more] + rng.integers(1, NUM_RELATIONS, len(more))) % NUM_RELATIONS)
  triples = np.stack([np.concatenate([h, h2]), np.concatenate([rel, r2]),
                      np.concatenate([t, t2])], axis=1).astype(np.int32)
  return triples[rng.permutation(len(triples))]


def degree_summary(triples: np.ndarray, nodes: int) -> str:
  pairs = np.unique(np.sort(triples[:, [0, 2]], axis=1).astype(np.int64) @ [nodes, 1])
  deg = np.bincount(np.concatenate([pairs // nodes, pairs % nodes]), minlength=nodes)
  return (f"degree: mean {deg.mean():.1f}, median {int(np.median(deg))}, "
          f"p99 {int(np.percentile(deg, 99))}, max {deg.max()}, "
          f"nodes with degree >= 100: {(deg >= 100).sum()}, isolated: {(deg == 0).sum()}")


# ------------------------------------------------ paper's per-root algorithm


def python_reference(triples: np.ndarray, nodes: int) -> tuple[set, set]:
  """Triangles (sorted node tuples) and diamonds (sorted tuples of their 5
  edges) the way the paper describes it, one root entity at a time."""
  adj = [set() for _ in range(nodes)]
  for h, _, t in triples.tolist():
    if h != t:
      adj[h].add(t)
      adj[t].add(h)
  edge = lambda x, y: (x, y) if x < y else (y, x)
  triangles, diamonds = set(), set()
  for a in range(nodes):
    neighbours = sorted(adj[a])
    for i, b in enumerate(neighbours):
      adj_b = adj[b]
      for c in neighbours[i + 1:]:
        if c not in adj_b:
          continue
        triangles.add(tuple(sorted((a, b, c))))
        # 4-cycle A-B-D-C with the diagonal B-C.
        adj_c = adj[c]
        for d in adj_b:
          if d != a and d != c and d in adj_c:
            diamonds.add(tuple(sorted([edge(a, b), edge(a, c), edge(b, c), edge(b, d),
                                       edge(c, d)])))
  return triangles, diamonds


def vectorized_sets(c) -> tuple[set, set]:
  triangles = set(map(tuple, c.triangles.tolist()))
  diamonds = set()
  for u, v, a, b in c.diamonds.tolist():
    edges = [(u, v), (min(u, a), max(u, a)), (min(v, a), max(v, a)),
             (min(u, b), max(u, b)), (min(v, b), max(v, b))]
    diamonds.add(tuple(sorted(edges)))
  return triangles, diamonds


# ---------------------------------------------------------- child process


def child(step: str, path: str, nodes: int, max_diamonds: int | None) -> None:
  """Runs one measured step and prints a JSON line."""
  triples = np.load(path)
  base = vm_hwm_gb()
  t = time.perf_counter()
  if step == "count":
    c3, c4 = count_cycles(triples, nodes)
  else:
    c = mine_cycles(triples, nodes, seed=0, max_diamonds=0 if step == "triangles" else max_diamonds)
    c3, c4 = len(c.triangles), len(c.diamonds)
  seconds = time.perf_counter() - t
  print(json.dumps(dict(step=step, seconds=seconds, peak_gb=vm_hwm_gb(), base_gb=base,
                        triangles=c3, diamonds=c4)))


def vm_hwm_gb() -> float:
  line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
  return int(line.split()[1]) * 1024 / 1e9


def run_child(step: str, path: Path, nodes: int, max_diamonds: int | None = None) -> dict:
  cmd = [sys.executable, __file__, "--child", step, "--graph", str(path), "--nodes", str(nodes)]
  if max_diamonds is not None:
    cmd += ["--child-max-diamonds", str(max_diamonds)]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------- main


def big_graph(args, work: Path) -> list[dict]:
  t = time.perf_counter()
  triples = power_law_kg(args.nodes, args.edges, args.gamma, args.max_degree, args.extra, args.seed)
  print(f"big graph: {args.nodes:,} nodes, {args.edges:,} edges, {len(triples):,} triples "
        f"(generated in {time.perf_counter() - t:.1f} s)")
  print(degree_summary(triples, args.nodes))
  path = work / "big.npy"
  np.save(path, triples)
  del triples
  rows = [run_child("triangles", path, args.nodes), run_child("count", path, args.nodes)]
  total4 = rows[1]["diamonds"]
  cap = args.max_diamonds if total4 > args.max_diamonds else None
  mine = run_child("mine", path, args.nodes, cap)
  mine["note"] = f"seeded sample of {cap:,} (of {total4:,})" if cap else "all diamonds"
  assert rows[0]["triangles"] == rows[1]["triangles"] == mine["triangles"]
  assert cap is not None or mine["diamonds"] == total4
  return rows + [mine]


def small_graph(args) -> dict:
  triples = power_law_kg(args.small_nodes, args.small_edges, args.gamma, args.max_degree,
                         args.extra, args.seed + 1)
  print(f"small graph: {args.small_nodes:,} nodes, {args.small_edges:,} edges, "
        f"{len(triples):,} triples; {degree_summary(triples, args.small_nodes)}")
  t = time.perf_counter()
  ref = python_reference(triples, args.small_nodes)
  python_s = time.perf_counter() - t
  times = []
  for _ in range(3):
    t = time.perf_counter()
    c = mine_cycles(triples, args.small_nodes)
    times.append(time.perf_counter() - t)
  vec_s = statistics.median(times)
  identical = vectorized_sets(c) == ref
  return dict(python_s=python_s, vec_s=vec_s, identical=identical, triangles=len(ref[0]),
              diamonds=len(ref[1]))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--nodes", type=int, default=1_000_000)
  parser.add_argument("--edges", type=int, default=5_000_000)
  parser.add_argument("--small-nodes", type=int, default=20_000)
  parser.add_argument("--small-edges", type=int, default=100_000)
  parser.add_argument("--gamma", type=float, default=2.5)
  parser.add_argument("--max-degree", type=float, default=10_000)
  parser.add_argument("--extra", type=float, default=0.05)
  parser.add_argument("--max-diamonds", type=int, default=50_000_000,
                      help="materialize all diamonds up to this count, else a sample of it")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="/tmp/kmlm-bench-cycles")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  parser.add_argument("--graph", help=argparse.SUPPRESS)
  parser.add_argument("--child-max-diamonds", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(args.child, args.graph, args.nodes, args.child_max_diamonds)

  work = Path(args.workdir)
  shutil.rmtree(work, ignore_errors=True)
  work.mkdir(parents=True)
  try:
    rows = big_graph(args, work)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  small = small_graph(args)
  speedup = small["python_s"] / small["vec_s"]

  print()
  print("| graph | step | seconds | peak RSS (GB) | triangles | diamonds | note |")
  print("|---|---|---:|---:|---:|---:|---|")
  notes = {"triangles": "simple graph + triangle listing", "count": "count_cycles, O(E) memory"}
  for r in rows:
    print(f"| {args.nodes // 1000:,}k nodes / {args.edges // 1000:,}k edges | {r['step']} | "
          f"{r['seconds']:.2f} | {r['peak_gb']:.2f} | {r['triangles']:,} | {r['diamonds']:,} | "
          f"{r.get('note', notes.get(r['step'], ''))} |")
  label = f"{args.small_nodes // 1000:,}k nodes / {args.small_edges // 1000:,}k edges"
  print(f"| {label} | per-root Python (paper) | {small['python_s']:.2f} | | "
        f"{small['triangles']:,} | {small['diamonds']:,} | reference |")
  print(f"| {label} | mine_cycles | {small['vec_s']:.3f} | | {small['triangles']:,} | "
        f"{small['diamonds']:,} | {speedup:.0f}x faster, identical sets: "
        f"{str(small['identical']).lower()} |")
  print(f"(peak RSS is the child process's VmHWM; it includes ~{rows[0]['base_gb']:.2f} GB of "
        f"interpreter, numpy and input triples)")
  tri, cnt, mine = rows
  print(f"triangles_1m={tri['triangles']} diamonds_1m={cnt['diamonds']} "
        f"seconds_1m={mine['seconds']:.2f} triangle_seconds_1m={tri['seconds']:.2f} "
        f"count_seconds_1m={cnt['seconds']:.2f} peak_rss_gb_1m={mine['peak_gb']:.2f} "
        f"count_peak_rss_gb_1m={cnt['peak_gb']:.2f} diamonds_materialized_1m={mine['diamonds']} "
        f"speedup_vs_python={speedup:.0f} identical={str(small['identical']).lower()}")
  if not small["identical"]:
    sys.exit(1)


if __name__ == "__main__":
  main()
