"""Cycle mining for KMLM reasoning data: triangles and diamonds.

The KG is read as an undirected simple graph. Input `triples` is an int
array [M, 3] of (head, relation, tail) ids with 0 <= head, tail < N
(`num_entities`). Self-loops (head == tail) are dropped. All triples on one
unordered entity pair {u, v} (several relations, either direction) become
ONE edge; the triple kept for it is the one with the smallest

    (splitmix64 chain of (seed, head, relation, tail), head, relation, tail, row)

so the choice depends on the seed and on the triple's content only:
permuting the rows of `triples` keeps the same (head, relation, tail) for
every pair (only among identical duplicate rows does the lowest row index
decide). Every `*_triples` array below holds row indices into the input
`triples`, so a sentence generator can render the kept triple with its real
direction and relation.

Output (`Cycles`, numpy int arrays; entity ids int32 when N < 2**31,
triple indices int32 when M < 2**31, int64 otherwise):
- edges [E, 2] (u < v), rows sorted; edge_triples [E].
- triangles [C3, 3] (u < v < w), rows sorted; triangle_triples [C3, 3]:
  the triples of the edges (u, v), (v, w), (u, w).
- diamonds [C4, 4] (u, v, a, b): the 4-cycles with a diagonal of the paper
  (triangle A-B-C plus D adjacent to B and C). A diamond is identified by its
  edge set of 5 edges: diagonal {u, v} (u < v) plus two apexes a < b each
  adjacent to both u and v; the cycle is a-u-b-v-a. A K4 holds 6 diamonds
  (one per diagonal). Rows sorted. diamond_triples [C4, 5]: the triples of
  (u, v), (u, a), (v, a), (u, b), (v, b).

Method: edges are oriented from the lower (degree, id) endpoint to the
higher one (out-degree <= sqrt(2E)); every wedge u->v, u->w (v before w)
is closed by looking the key of v->w up in the sorted edge keys with
`np.searchsorted`. Wedges are processed in chunks of about `chunk_size`
(~100 bytes of temporaries per wedge of a chunk). Diamonds come from grouping the
triangles by edge: an edge on t triangles yields t*(t-1)/2 diamonds,
generated pairwise in chunks. `count_cycles` gives both counts exactly
without keeping triangles or diamonds (memory O(E)).

The original code (ntunlp/kmlm `wikidata_tool/gen_cycles3.py`, `gen_cycles4.py`)
searches per root over the root's and its children's outgoing claims; its loop variable
then overwrites the root with the last child of a set (so the search runs around that
child, an order set by Python's string hashing), and it keeps one diamond per node set.
Run unchanged on the embedded sample (MongoDB replaced by an in-memory stand-in, every
KMLM language, 8 hash seeds) it finds 37-46% of the triangles and 19-24% of the
diamonds (11-14% after its node-set dedup); every cycle it finds is in this module's
set. The brute-force and per-root references in the tests and `bench/cycles.py` are
this project's implementations of the paper's definition, not the original code.

Caps: `max_triangles=k` keeps the k triangles with the smallest seeded hash
of (u, v, w) (a uniform sample); `max_diamonds=k` draws k distinct indices
uniformly from the canonical (sorted) order of all diamonds with a seeded
generator and decodes only those, so it never enumerates the others. Both
are deterministic functions of (edge set, seed, k) and subsets of the
uncapped output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
from tqdm.auto import tqdm

_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SALT_TRIPLE = 0x6B6D6C6D5F747270  # domain tags so the three draws are independent
_SALT_TRIANGLE = 0x6B6D6C6D5F747269
_SALT_DIAMOND = 0x6B6D6C6D5F64696D


@dataclasses.dataclass(frozen=True)
class SimpleGraph:
  """Undirected simple graph of a KG.

  edges: [E, 2] (u < v), rows sorted; edge_triples: [E] input-row index of
  the triple kept for each edge.
  """

  num_entities: int
  edges: np.ndarray
  edge_triples: np.ndarray


@dataclasses.dataclass(frozen=True)
class Cycles:
  """Mined cycles (see the module docstring for layouts).

  total_triangles / total_diamonds are the counts before the caps.
  """

  edges: np.ndarray
  edge_triples: np.ndarray
  triangles: np.ndarray
  triangle_triples: np.ndarray
  diamonds: np.ndarray
  diamond_triples: np.ndarray
  total_triangles: int
  total_diamonds: int


# ------------------------------------------------------------------ helpers


def _index_dtype(n: int) -> type:
  return np.int32 if n < 2**31 else np.int64


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64 finalizer on uint64 (wraps on overflow by design)."""
  x = x ^ (x >> np.uint64(30))
  x = x * _M1
  x = x ^ (x >> np.uint64(27))
  x = x * _M2
  return x ^ (x >> np.uint64(31))


def _hash(seed: int, salt: int, *columns: np.ndarray) -> np.ndarray:
  """[n] uint64 hash of (seed, salt, columns...) row by row."""
  start = _mix(np.array([(seed ^ salt) % 2**64], np.uint64))[0]
  x = np.full(len(columns[0]), start, np.uint64)
  for c in columns:
    x = _mix(x + _GOLD + np.asarray(c).astype(np.uint64))
  return x


def _check_triples(triples, num_entities: int) -> np.ndarray:
  triples = np.asarray(triples)
  if triples.size == 0:
    return np.zeros((0, 3), np.int64)
  if triples.ndim != 2 or triples.shape[1] != 3 or triples.dtype.kind not in "iu":
    raise ValueError(f"triples must be an int array [M, 3], got {triples.dtype} {triples.shape}")
  heads, tails = triples[:, 0], triples[:, 2]
  if min(heads.min(), tails.min()) < 0 or max(heads.max(), tails.max()) >= num_entities:
    raise ValueError(f"triples reference entity ids outside [0, {num_entities})")
  return triples


def _later_rows(count: np.ndarray, start: int) -> np.ndarray:
  """Rows p + 1 .. p + count[p - start] for each row p = start, start + 1, ..., in order:
  the second rows of the pairs (p, q), p < q."""
  total = int(count.sum())
  shift = np.arange(start + 1, start + 1 + len(count), dtype=np.int64) - (np.cumsum(count) - count)
  return np.arange(total, dtype=np.int64) + np.repeat(shift, count)


def _sort_order(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
  """(sorted keys, stable argsort) of int64 keys in [0, bound)."""
  shift = max(1, (len(keys) - 1).bit_length())
  if int(bound).bit_length() + shift <= 63:
    # Key and position packed in one int64: np.sort (SIMD in numpy 2) is
    # several times faster than argsort.
    packed = np.sort((keys << shift) | np.arange(len(keys), dtype=np.int64))
    return packed >> shift, packed & ((1 << shift) - 1)
  order = np.argsort(keys, kind="stable")
  return keys[order], order


def _chunk_bounds(work: np.ndarray, budget: int) -> np.ndarray:
  """Cut points [0, ..., len(work)] so each slice sums to about `budget`."""
  cum = np.cumsum(work, dtype=np.int64)
  total = int(cum[-1]) if len(cum) else 0
  targets = np.arange(budget, total, budget, dtype=np.int64)
  cuts = np.searchsorted(cum, targets, side="right")
  return np.unique(np.concatenate([[0], cuts, [len(work)]]))


# ------------------------------------------------------------ simple graph


def simple_graph(triples, num_entities: int, seed: int = 0) -> SimpleGraph:
  """The undirected simple graph of `triples` with one seeded triple per edge."""
  triples = _check_triples(triples, num_entities)
  n = int(num_entities)
  rows = np.flatnonzero(triples[:, 0] != triples[:, 2])
  kept = triples if len(rows) == len(triples) else triples[rows]
  h, t = kept[:, 0].astype(np.int64), kept[:, 2].astype(np.int64)
  pair = np.minimum(h, t)
  pair *= n
  pair += np.maximum(h, t)
  del h, t, kept
  pair, order = _sort_order(pair, n * n)
  new = np.ones(len(pair), bool)
  np.not_equal(pair[1:], pair[:-1], out=new[1:])
  chosen = rows[order[new]]
  in_multi = ~new  # rows of pairs with several triples, which need the seeded choice
  in_multi[:-1] |= in_multi[1:]
  if in_multi.any():
    chosen[in_multi[new]] = _seeded_choice(triples, rows[order[in_multi]], pair[in_multi], seed)
  pair = pair[new]
  dtype = _index_dtype(n)
  edges = np.stack([(pair // n).astype(dtype), (pair % n).astype(dtype)], axis=1)
  return SimpleGraph(n, edges, chosen.astype(_index_dtype(len(triples))))


def _seeded_choice(triples: np.ndarray, rows: np.ndarray, pair: np.ndarray,
                   seed: int) -> np.ndarray:
  """For candidate `rows` (ascending within a group) grouped by `pair`
  (sorted), the winner of each group: smallest (hash, head, relation, tail,
  row)."""
  h, r, t = (triples[rows, i].astype(np.int64) for i in range(3))
  score = _hash(seed, _SALT_TRIPLE, h, r, t)
  best = np.lexsort((score, pair))  # stable: equal scores keep the lower row first
  tie = (pair[best][1:] == pair[best][:-1]) & (score[best][1:] == score[best][:-1])
  if tie.any():  # a 64-bit collision or duplicate rows: break ties by content
    best = np.lexsort((rows, t, r, h, score, pair))
  first = np.ones(len(best), bool)
  np.not_equal(pair[1:], pair[:-1], out=first[1:])  # pair is sorted: same groups
  return rows[best[first]]


# -------------------------------------------------------------- triangles


def _orient(graph: SimpleGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Edges oriented by (degree, id) rank: (keys, hi, eid, later), each [E].

  lo, hi: ranks of the source / target, sorted by (lo, hi); keys =
  lo * N + hi; eid: simple-graph edge id of each oriented edge;
  later: how many out-neighbours of lo follow this one.
  """
  n = graph.num_entities
  edges = graph.edges
  deg = np.bincount(edges.ravel(), minlength=n)
  rank = np.empty(n, edges.dtype)
  rank[_sort_order(deg, int(deg.max(initial=0)) + 1)[1]] = np.arange(n)
  del deg
  a, b = rank[edges[:, 0]], rank[edges[:, 1]]
  keys = np.minimum(a, b).astype(np.int64)
  keys *= n
  keys += np.maximum(a, b)
  del a, b, rank
  keys, eid = _sort_order(keys, n * n)
  eid = eid.astype(_index_dtype(len(edges)))
  lo, hi = keys // n, (keys % n).astype(edges.dtype)
  indptr = np.zeros(n + 1, np.int64)
  np.cumsum(np.bincount(lo, minlength=n), out=indptr[1:])
  later = indptr[lo + 1]
  later -= np.arange(1, len(lo) + 1)
  return keys, hi, eid, later


def _triangle_chunks(graph: SimpleGraph, chunk_size: int, progress: bool,
                     desc: str) -> Iterator[np.ndarray]:
  """Yields [c, 3] simple-graph edge ids (e(x, y), e(x, z), e(y, z)) of the
  triangles closed by each chunk of wedges x->y, x->z."""
  keys, hi, eid, later = _orient(graph)
  n = graph.num_entities
  bounds = _chunk_bounds(later, chunk_size)
  for i in tqdm(range(len(bounds) - 1), desc=desc, unit="chunk", disable=not progress):
    p0, p1 = int(bounds[i]), int(bounds[i + 1])
    first = np.repeat(np.arange(p0, p1, dtype=np.int64), later[p0:p1])
    second = _later_rows(later[p0:p1], p0)
    query = hi[first].astype(np.int64) * n + hi[second]
    # Sorted needles make searchsorted walk the keys in order: ~2.5x faster.
    query, by_key = _sort_order(query, n * n)
    idx = np.searchsorted(keys, query)
    np.minimum(idx, len(keys) - 1, out=idx)
    hit = keys[idx] == query
    wedge = by_key[hit]
    yield np.stack([eid[first[wedge]], eid[second[wedge]], eid[idx[hit]]], axis=1)


def _canonical_triangles(graph: SimpleGraph, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Edge-id triangles -> ([C, 3] nodes u < v < w, [C, 3] edge ids of
  (u, v), (v, w), (u, w)), rows sorted."""
  e = graph.edges
  ex = e[tri[:, 0]].astype(np.int64)  # x->y, x->z share x
  ey = e[tri[:, 1]].astype(np.int64)
  x = np.where((ex[:, 0] == ey[:, 0]) | (ex[:, 0] == ey[:, 1]), ex[:, 0], ex[:, 1])
  y = ex[:, 0] + ex[:, 1] - x
  z = ey[:, 0] + ey[:, 1] - x
  nodes = np.stack([x, y, z], axis=1)
  opposite = tri[:, [2, 1, 0]]  # edge opposite x is (y, z), etc.
  perm = np.argsort(nodes, axis=1, kind="stable")
  nodes = np.take_along_axis(nodes, perm, axis=1).astype(e.dtype)
  opposite = np.take_along_axis(opposite, perm, axis=1)
  edge_ids = opposite[:, [2, 0, 1]]
  n = graph.num_entities
  order = _sort_order(edge_ids[:, 0].astype(np.int64) * n + nodes[:, 2], len(e) * n)[1]
  return nodes[order], edge_ids[order]


def triangle_edges(graph: SimpleGraph, *, chunk_size: int = 1 << 18,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """All triangles: ([C3, 3] nodes u < v < w, [C3, 3] edge ids of (u, v),
  (v, w), (u, w)), rows sorted."""
  dtype = _index_dtype(len(graph.edges))
  parts = [c.astype(dtype) for c in _triangle_chunks(graph, chunk_size, progress, "triangles")]
  tri = np.concatenate(parts) if parts else np.zeros((0, 3), dtype)
  return _canonical_triangles(graph, tri)


# --------------------------------------------------------------- diamonds


@dataclasses.dataclass(frozen=True)
class _Incidences:
  """Triangle-on-edge incidences of the edges on >= 2 triangles, sorted by
  (edge, apex). Row: diagonal (u, v), apex x and the triples of (u, v),
  (u, x), (v, x). Per group (edge): start row, size t and the exclusive
  prefix sum of t*(t-1)/2."""

  u: np.ndarray
  v: np.ndarray
  apex: np.ndarray
  t_uv: np.ndarray
  t_ua: np.ndarray
  t_va: np.ndarray
  start: np.ndarray
  size: np.ndarray
  pair_start: np.ndarray


def _incidences(graph: SimpleGraph, nodes: np.ndarray, eids: np.ndarray) -> _Incidences:
  e_uv, e_vw, e_uw = eids[:, 0], eids[:, 1], eids[:, 2]
  per_edge = np.bincount(eids.ravel(), minlength=len(graph.edges))
  # (diagonal, apex, e(diagonal lo, apex), e(diagonal hi, apex)) for each triangle edge.
  edge = np.concatenate([e_uv, e_vw, e_uw])
  apex = np.concatenate([nodes[:, 2], nodes[:, 0], nodes[:, 1]])
  ua = np.concatenate([e_uw, e_uv, e_uv])
  va = np.concatenate([e_vw, e_uw, e_vw])
  keep = np.flatnonzero(per_edge[edge] > 1)
  edge, apex, ua, va = edge[keep], apex[keep], ua[keep], va[keep]
  n = graph.num_entities
  order = _sort_order(edge.astype(np.int64) * n + apex, len(graph.edges) * n)[1]
  edge, apex, ua, va = edge[order], apex[order], ua[order], va[order]
  new = np.ones(len(edge), bool)
  new[1:] = edge[1:] != edge[:-1]
  start = np.flatnonzero(new)
  size = np.diff(np.append(start, len(edge)))
  pairs = size * (size - 1) // 2
  et = graph.edge_triples
  return _Incidences(graph.edges[edge, 0], graph.edges[edge, 1], apex, et[edge], et[ua], et[va],
                     start, size, np.cumsum(pairs) - pairs)


def _diamond_rows(inc: _Incidences, at_p, q: np.ndarray, nodes: np.ndarray,
                  triples: np.ndarray) -> None:
  """Writes the diamonds of incidence rows p < q (same edge) into
  nodes [len(q), 4] and triples [len(q), 5]; at_p(column) gives column[p]."""
  for col, src in enumerate([inc.u, inc.v, inc.apex]):
    nodes[:, col] = at_p(src)
  nodes[:, 3] = inc.apex[q]
  for col, src in enumerate([inc.t_uv, inc.t_ua, inc.t_va]):
    triples[:, col] = at_p(src)
  triples[:, 3] = inc.t_ua[q]
  triples[:, 4] = inc.t_va[q]


def _all_diamonds(inc: _Incidences, total: int, chunk_size: int,
                  progress: bool) -> tuple[np.ndarray, np.ndarray]:
  nodes, triples = np.empty((total, 4), inc.u.dtype), np.empty((total, 5), inc.t_uv.dtype)
  later = np.repeat(inc.start + inc.size, inc.size) - np.arange(len(inc.u)) - 1
  bounds = _chunk_bounds(later, chunk_size)
  out = 0
  for i in tqdm(range(len(bounds) - 1), desc="diamonds", unit="chunk", disable=not progress):
    b0, b1 = int(bounds[i]), int(bounds[i + 1])
    count = later[b0:b1]
    q = _later_rows(count, b0)
    # p is a run-length repeat of b0..b1: np.repeat streams instead of gathering.
    at_p = lambda src: np.repeat(src[b0:b1], count)
    _diamond_rows(inc, at_p, q, nodes[out:out + len(q)], triples[out:out + len(q)])
    out += len(q)
  return nodes, triples


def _decode_lex_pairs(index: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Inverse of the lexicographic rank of pair (i, j), 0 <= i < j < t."""
  # Reversing items turns lex order into reversed colex order, whose rank
  # j'(j'-1)/2 + i' inverts with one square root.
  q = t * (t - 1) // 2 - 1 - index
  j = np.floor((1 + np.sqrt(1 + 8 * q.astype(np.float64))) / 2).astype(np.int64)
  for _ in range(2):  # float rounding fix-up
    j = np.where(j * (j - 1) // 2 > q, j - 1, j)
    j = np.where((j + 1) * j // 2 <= q, j + 1, j)
  i = q - j * (j - 1) // 2
  return t - 1 - j, t - 1 - i


def _sampled_diamonds(inc: _Incidences, total: int, k: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng([seed % 2**63, _SALT_DIAMOND])
  index = np.sort(rng.choice(total, size=k, replace=False, shuffle=False))
  group = np.searchsorted(inc.pair_start, index, side="right") - 1
  i, j = _decode_lex_pairs(index - inc.pair_start[group], inc.size[group])
  nodes, triples = np.empty((k, 4), inc.u.dtype), np.empty((k, 5), inc.t_uv.dtype)
  p = inc.start[group] + i
  _diamond_rows(inc, lambda src: src[p], inc.start[group] + j, nodes, triples)
  return nodes, triples


# ------------------------------------------------------------------- API


def count_cycles(triples, num_entities: int, *, chunk_size: int = 1 << 18,
                 progress: bool = False) -> tuple[int, int]:
  """(number of triangles, number of diamonds), exact, in O(E) memory."""
  graph = simple_graph(triples, num_entities)
  t = np.zeros(len(graph.edges), np.int64)
  for tri in _triangle_chunks(graph, chunk_size, progress, "count"):
    t += np.bincount(tri.ravel(), minlength=len(t))
  return int(t.sum()) // 3, int((t * (t - 1) // 2).sum())


def mine_cycles(triples, num_entities: int, seed: int = 0, *, max_triangles: int | None = None,
                max_diamonds: int | None = None, chunk_size: int = 1 << 18,
                progress: bool = False) -> Cycles:
  """Triangles and diamonds of the KG (see the module docstring).

  chunk_size: wedges (and diamonds) per vectorized step; bounds the
  temporary memory. max_triangles / max_diamonds: None keeps all, k keeps a
  seeded uniform sample of k.
  """
  graph = simple_graph(triples, num_entities, seed)
  nodes, eids = triangle_edges(graph, chunk_size=chunk_size, progress=progress)
  per_edge = np.bincount(eids.ravel(), minlength=len(graph.edges)).astype(np.int64)
  total3, total4 = len(nodes), int((per_edge * (per_edge - 1) // 2).sum())
  k4 = total4 if max_diamonds is None else max(0, min(int(max_diamonds), total4))
  d_nodes, d_triples = _diamonds(graph, nodes, eids, total4, k4, seed, chunk_size, progress)
  if max_triangles is not None and max_triangles < total3:
    keep = _triangle_sample(nodes, max(0, int(max_triangles)), seed)
    nodes, eids = nodes[keep], eids[keep]
  return Cycles(edges=graph.edges, edge_triples=graph.edge_triples, triangles=nodes,
                triangle_triples=graph.edge_triples[eids], diamonds=d_nodes,
                diamond_triples=d_triples, total_triangles=total3, total_diamonds=total4)


def _diamonds(graph: SimpleGraph, nodes: np.ndarray, eids: np.ndarray, total: int, k: int,
              seed: int, chunk_size: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
  """k of the `total` diamonds: all of them, or a seeded sample."""
  if k == 0:
    return (np.zeros((0, 4), graph.edges.dtype), np.zeros((0, 5), graph.edge_triples.dtype))
  inc = _incidences(graph, nodes, eids)
  if k == total:
    return _all_diamonds(inc, total, chunk_size, progress)
  return _sampled_diamonds(inc, total, k, seed)


def _triangle_sample(nodes: np.ndarray, k: int, seed: int) -> np.ndarray:
  """Sorted rows of the k triangles with the smallest seeded hash."""
  if k == 0:
    return np.zeros(0, np.int64)
  score = _hash(seed, _SALT_TRIANGLE, nodes[:, 0], nodes[:, 1], nodes[:, 2])
  return np.sort(np.argpartition(score, k - 1)[:k])
