"""Cycle mining against a brute-force reference on small random graphs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kmlm_jax.kg.cycles import count_cycles, mine_cycles, simple_graph


# ------------------------------------------------------------- reference


def brute_force(triples: np.ndarray, n: int):
  """(pair -> set of triple rows, triangles as sorted node tuples, diamonds
  as frozensets of their 5 edges), by checking every node triple/quadruple."""
  pairs = {}
  for row, (h, _, t) in enumerate(triples.tolist()):
    if h != t:
      pairs.setdefault(frozenset((h, t)), set()).add(row)
  adj = lambda x, y: frozenset((x, y)) in pairs
  triangles = {(a, b, c) for a, b, c in itertools.combinations(range(n), 3)
               if adj(a, b) and adj(b, c) and adj(a, c)}
  diamonds = set()
  for quad in itertools.combinations(range(n), 4):
    for u, v in itertools.combinations(quad, 2):
      a, b = (x for x in quad if x not in (u, v))
      edges = [(u, v), (u, a), (v, a), (u, b), (v, b)]
      if all(adj(x, y) for x, y in edges):
        diamonds.add(frozenset(frozenset(e) for e in edges))
  return pairs, triangles, diamonds


def random_kg(rng: np.random.Generator, n: int, density: float, num_relations: int = 3):
  """Triples over n nodes: each pair present with `density`, with 1-3
  relations and either/both directions, plus some self-loops; rows shuffled."""
  rows = []
  for u, v in itertools.combinations(range(n), 2):
    if rng.random() < density:
      for _ in range(rng.integers(1, 4)):
        h, t = (u, v) if rng.random() < 0.5 else (v, u)
        rows.append((h, int(rng.integers(num_relations)), t))
  for x in range(n):
    if rng.random() < 0.2:
      rows.append((x, int(rng.integers(num_relations)), x))
  triples = np.array(rows, np.int32).reshape(-1, 3)
  triples = np.unique(triples, axis=0)
  return triples[rng.permutation(len(triples))]


def complete_kg(n: int) -> np.ndarray:
  return np.array([(u, 0, v) for u, v in itertools.combinations(range(n), 2)],
                  np.int32).reshape(-1, 3)


def mined_sets(c):
  triangles = {tuple(t) for t in c.triangles.tolist()}
  diamonds = {frozenset(frozenset(e) for e in [(u, v), (u, a), (v, a), (u, b), (v, b)])
              for u, v, a, b in c.diamonds.tolist()}
  return triangles, diamonds


def check_against_reference(triples: np.ndarray, n: int, seed: int = 0):
  pairs, ref_tri, ref_dia = brute_force(triples, n)
  c = mine_cycles(triples, n, seed)
  # Edges: one per pair, its triple one of that pair's triples.
  assert {frozenset(e) for e in c.edges.tolist()} == set(pairs)
  assert len(c.edges) == len(pairs)
  assert np.all(c.edges[:, 0] < c.edges[:, 1])
  for (u, v), row in zip(c.edges.tolist(), c.edge_triples.tolist()):
    assert row in pairs[frozenset((u, v))]
  tri, dia = mined_sets(c)
  assert tri == ref_tri and len(tri) == len(c.triangles)
  assert dia == ref_dia and len(dia) == len(c.diamonds)
  assert (c.total_triangles, c.total_diamonds) == (len(ref_tri), len(ref_dia))
  assert count_cycles(triples, n) == (len(ref_tri), len(ref_dia))
  check_layout(triples, c)
  return c


def check_layout(triples: np.ndarray, c):
  """Canonical order of nodes and rows; each triple index renders its edge."""
  def ends(rows):
    h, t = triples[rows, 0], triples[rows, 2]
    return np.minimum(h, t), np.maximum(h, t)

  if len(c.triangles):
    u, v, w = c.triangles.T
    assert np.all((u < v) & (v < w))
    assert np.all(np.diff(c.triangles.astype(np.int64) @ [10**6, 10**3, 1]) > 0)
    for col, (x, y) in enumerate([(u, v), (v, w), (u, w)]):
      lo, hi = ends(c.triangle_triples[:, col])
      assert np.array_equal(lo, x) and np.array_equal(hi, y)
  if len(c.diamonds):
    u, v, a, b = c.diamonds.T
    assert np.all((u < v) & (a < b))
    assert np.all(np.diff(c.diamonds.astype(np.int64) @ [10**9, 10**6, 10**3, 1]) > 0)
    for col, (x, y) in enumerate([(u, v), (u, a), (v, a), (u, b), (v, b)]):
      lo, hi = ends(c.diamond_triples[:, col])
      assert np.array_equal(lo, np.minimum(x, y)) and np.array_equal(hi, np.maximum(x, y))


# ------------------------------------------------------------------ tests


def test_random_graphs_match_brute_force():
  rng = np.random.default_rng(1234)
  cases = 0
  for n in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]:
    for density in [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]:
      for _ in range(4):
        triples = random_kg(rng, n, density)
        # Isolated nodes: ids beyond the used range, and gaps inside it.
        num_entities = n + int(rng.integers(0, 3))
        check_against_reference(triples, num_entities, seed=int(rng.integers(100)))
        cases += 1
  assert cases >= 200


@pytest.mark.parametrize("n,triangles,diamonds", [(4, 4, 6), (5, 10, 30), (6, 20, 90)])
def test_complete_graphs(n, triangles, diamonds):
  # K_n: each edge lies on n-2 triangles -> C(n-2, 2) diamonds per edge.
  c = check_against_reference(complete_kg(n), n)
  assert (len(c.triangles), len(c.diamonds)) == (triangles, diamonds)


def test_k4_keeps_six_diamonds_on_four_nodes():
  c = mine_cycles(complete_kg(4), 4)
  assert len(c.diamonds) == 6
  assert {tuple(sorted(d)) for d in c.diamonds.tolist()} == {(0, 1, 2, 3)}
  assert sorted(map(tuple, c.diamonds[:, :2].tolist())) == \
      [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_empty_and_degenerate_inputs():
  for triples, n in [(np.zeros((0, 3), np.int32), 0), (np.zeros((0, 3), np.int32), 5),
                     (np.array([[0, 0, 0], [1, 2, 1]], np.int32), 3),
                     (np.array([[0, 0, 1], [1, 1, 0], [1, 0, 2]], np.int32), 3)]:
    c = check_against_reference(triples, n)
    assert c.triangles.shape == (0, 3) and c.diamonds.shape == (0, 4)
    assert c.triangle_triples.shape == (0, 3) and c.diamond_triples.shape == (0, 5)


def test_rejects_bad_input():
  with pytest.raises(ValueError):
    mine_cycles(np.array([[0, 0, 3]], np.int32), 3)
  with pytest.raises(ValueError):
    mine_cycles(np.array([[0, 1]], np.int32), 3)


def test_chosen_triple_invariant_to_row_order():
  rng = np.random.default_rng(7)
  triples = random_kg(rng, 30, 0.3, num_relations=5)
  base = simple_graph(triples, 30, seed=3)
  chosen = {tuple(e): tuple(triples[i]) for e, i in zip(base.edges.tolist(), base.edge_triples)}
  for _ in range(5):
    perm = rng.permutation(len(triples))
    g = simple_graph(triples[perm], 30, seed=3)
    assert np.array_equal(g.edges, base.edges)
    assert {tuple(e): tuple(triples[perm][i])
            for e, i in zip(g.edges.tolist(), g.edge_triples)} == chosen
    c = mine_cycles(triples[perm], 30, seed=3)
    assert np.array_equal(perm[c.triangle_triples],
                          mine_cycles(triples, 30, seed=3).triangle_triples)


def test_seed_changes_choice_on_multi_relation_pair():
  # One pair with 8 triples (4 relations x 2 directions).
  triples = np.array([(h, r, t) for r in range(4) for h, t in [(0, 1), (1, 0)]], np.int32)
  picks = {tuple(triples[simple_graph(triples, 2, seed).edge_triples[0]]) for seed in range(40)}
  assert len(picks) > 4
  assert picks <= {tuple(t) for t in triples.tolist()}


def test_caps_are_deterministic_subsets():
  rng = np.random.default_rng(5)
  triples = random_kg(rng, 14, 0.8)
  full = mine_cycles(triples, 14, seed=11)
  full_tri, full_dia = mined_sets(full)
  assert len(full_tri) > 40 and len(full_dia) > 100
  for k3, k4 in [(0, 0), (1, 1), (17, 50), (len(full_tri) - 1, len(full_dia) - 1)]:
    a = mine_cycles(triples, 14, seed=11, max_triangles=k3, max_diamonds=k4)
    b = mine_cycles(triples[rng.permutation(len(triples))], 14, seed=11,
                    max_triangles=k3, max_diamonds=k4)
    assert np.array_equal(a.triangles, b.triangles) and np.array_equal(a.diamonds, b.diamonds)
    tri, dia = mined_sets(a)
    assert len(tri) == len(a.triangles) == k3 and len(dia) == len(a.diamonds) == k4
    assert tri <= full_tri and dia <= full_dia
    assert (a.total_triangles, a.total_diamonds) == (len(full_tri), len(full_dia))
    check_layout(triples, a)
  # A cap at or above the total keeps everything; another seed samples differently.
  big = mine_cycles(triples, 14, seed=11, max_triangles=10**9, max_diamonds=10**9)
  assert np.array_equal(big.diamonds, full.diamonds)
  other = mine_cycles(triples, 14, seed=12, max_triangles=17, max_diamonds=50)
  assert mined_sets(other) != mined_sets(mine_cycles(triples, 14, seed=11, max_triangles=17,
                                                     max_diamonds=50))


def test_small_chunks_give_same_result():
  rng = np.random.default_rng(3)
  triples = random_kg(rng, 25, 0.5)
  a = mine_cycles(triples, 25, seed=1)
  b = mine_cycles(triples, 25, seed=1, chunk_size=7, progress=True)
  for field in ("triangles", "triangle_triples", "diamonds", "diamond_triples"):
    assert np.array_equal(getattr(a, field), getattr(b, field))
  assert count_cycles(triples, 25, chunk_size=5) == (len(a.triangles), len(a.diamonds))


def test_duplicate_rows_pick_lowest_row():
  # Identical rows hash alike: the tie goes to the lowest row, the content is the same.
  triples = np.array([[1, 2, 0], [0, 1, 1], [1, 2, 0], [0, 1, 1], [2, 0, 1]], np.int32)
  for seed in range(10):
    g = simple_graph(triples, 3, seed)
    assert g.edges.tolist() == [[0, 1], [1, 2]]
    row = int(g.edge_triples[0])
    assert row in (0, 1) and row == min(i for i in range(4) if (triples[i] == triples[row]).all())
    assert g.edge_triples[1] == 4


def test_sort_order_fallback_matches_packed_sort():
  from kmlm_jax.kg.cycles import _sort_order
  keys = np.random.default_rng(0).integers(0, 50, 1000).astype(np.int64)
  packed = _sort_order(keys, 50)
  fallback = _sort_order(keys, 2**62)
  expected = np.argsort(keys, kind="stable")
  for got in (packed, fallback):
    assert np.array_equal(got[1], expected) and np.array_equal(got[0], keys[expected])


def test_pair_rank_decoding_is_exact_for_large_groups():
  from kmlm_jax.kg.cycles import _decode_lex_pairs
  rng = np.random.default_rng(0)
  for t in [2, 3, 7, 1000, 10**6, 3 * 10**9]:
    total = t * (t - 1) // 2
    index = np.concatenate([[0, total - 1], rng.integers(0, total, 2000)]).astype(np.int64)
    size = np.full(len(index), t, np.int64)
    i, j = _decode_lex_pairs(index, size)
    assert np.all((0 <= i) & (i < j) & (j < t))
    assert np.array_equal(i * (2 * t - i - 1) // 2 + (j - i - 1), index)
