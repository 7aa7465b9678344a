"""kmlm_jax.evaluation.metrics against brute-force Python loops and hand-computed values."""

import numpy as np
import pytest

from kmlm_jax.evaluation import metrics


def _brute_force_rank(scores, answer, filtered, ties, lower_is_better):
  """One candidate at a time: the answer's rank among the candidates not filtered."""
  target = scores[answer]
  better = tied = 0
  for c, s in enumerate(scores):
    if c == answer or filtered[c]:
      continue
    better += s < target if lower_is_better else s > target
    tied += s == target
  return 1 + better + {"mean": tied / 2, "optimistic": 0, "pessimistic": tied}[ties]


@pytest.mark.parametrize("ties", metrics.TIES)
@pytest.mark.parametrize("lower_is_better", [False, True])
def test_ranks_equal_brute_force(ties, lower_is_better):
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 4, (50, 12)).astype(np.float32)  # many ties
  answers = rng.integers(0, 12, 50)
  filtered = rng.random((50, 12)) < 0.3
  filtered[0, answers[0]] = True  # a filter at the answer itself is ignored
  got = metrics.ranks(scores, answers, filtered, ties=ties, lower_is_better=lower_is_better)
  want = [_brute_force_rank(s, a, f, ties, lower_is_better)
          for s, a, f in zip(scores, answers, filtered)]
  np.testing.assert_array_equal(got, want)
  unfiltered = [_brute_force_rank(s, a, np.zeros(12, bool), ties, lower_is_better)
                for s, a in zip(scores, answers)]
  np.testing.assert_array_equal(
      metrics.ranks(scores, answers, ties=ties, lower_is_better=lower_is_better), unfiltered)


def test_tie_policies_by_hand():
  scores = np.array([[0.5, 0.5, 0.5, 0.9, 0.1]])  # answer 0: one better, two tied
  assert metrics.ranks(scores, [0])[0] == 3.0  # default "mean"
  assert metrics.ranks(scores, [0], ties="optimistic")[0] == 2.0
  assert metrics.ranks(scores, [0], ties="pessimistic")[0] == 4.0
  # A collapsed model (all scores equal) ranks at chance under "mean", not at 1.
  assert metrics.ranks(np.zeros((1, 9)), [4])[0] == 5.0


def test_known_answers_and_filter_mask_equal_brute_force():
  rng = np.random.default_rng(1)
  known = np.unique(rng.integers(0, [6, 3, 6], (60, 3)), axis=0)
  queries = known[rng.choice(len(known), 15, replace=False)]
  for predict_head in (False, True):
    rows, cols = metrics.known_answers(known, queries, predict_head=predict_head)
    true = {tuple(x) for x in known.tolist()}
    want = {(q, e) for q, (h, r, t) in enumerate(queries.tolist()) for e in range(6)
            if ((e, r, t) if predict_head else (h, r, e)) in true}
    assert set(zip(rows.tolist(), cols.tolist())) == want and len(rows) == len(want)
    answers = queries[:, 0 if predict_head else 2]
    mask = metrics.filter_mask(answers, 6, rows, cols)
    for q, answer in enumerate(answers):
      assert not mask[q, answer]  # the answer itself is never filtered
      assert {e for e in range(6) if mask[q, e]} == {e for (r, e) in want if r == q} - {answer}


def test_pairs_of_lists_and_padded_arrays():
  rows, cols = metrics.pairs([[3, 1], [], [2]])
  assert rows.tolist() == [0, 0, 2] and cols.tolist() == [3, 1, 2]
  rows, cols = metrics.pairs(np.array([[3, 1], [-1, -1], [2, -1]]))
  assert rows.tolist() == [0, 0, 2] and cols.tolist() == [3, 1, 2]
  mask = metrics.filter_mask([1, 0, 2], 4, rows, cols)
  assert mask.tolist() == [[False, False, False, True], [False] * 4,
                           [False, False, False, False]]


def test_hits_mrr_and_summary_equal_brute_force():
  rng = np.random.default_rng(2)
  ranks = np.concatenate([rng.integers(1, 30, 40) + rng.integers(0, 2, 40) / 2, [np.inf] * 3])
  for k in (1, 3, 10):
    assert metrics.hits_at(ranks, k) == pytest.approx(sum(r <= k for r in ranks) / len(ranks))
  assert metrics.mrr(ranks) == pytest.approx(sum(1 / r for r in ranks) / len(ranks))
  summary = metrics.summarize(ranks, (1, 10))
  assert list(summary) == ["hits@1", "hits@10", "mrr", "count"] and summary["count"] == 43
  assert all(0 <= summary[m] <= 1 for m in ("hits@1", "hits@10", "mrr"))  # fractions
  assert np.isnan(metrics.mrr([])) and metrics.summarize([])["count"] == 0


def test_list_ranks_by_hand():
  ranked = np.array([
      [4, 7, 1, -1],   # answer 1 at position 3; 7 is another true object -> rank 2
      [5, 6, 8, 9],    # answer 9, nothing filtered -> 4
      [2, 3, -1, -1],  # answer 0 absent -> inf
      [3, 3, 0, 1],    # repeated 3 counts once -> rank 2
      [0, 1, 2, 3],    # answer 0 first -> 1 (a known list containing it changes nothing)
  ])
  answers = np.array([1, 9, 0, 0, 0])
  known = np.array([[7, -1], [-1, -1], [2, 3], [-1, -1], [0, 5]])
  ranks = metrics.list_ranks(ranked, answers, known)
  np.testing.assert_array_equal(ranks, [2, 4, np.inf, 2, 1])
  np.testing.assert_array_equal(metrics.list_ranks(ranked, answers), [3, 4, np.inf, 2, 1])


def test_bad_inputs():
  with pytest.raises(ValueError, match=r"\[N, K\]"):
    metrics.list_ranks(np.array([1, 2]), np.array([1]))
  with pytest.raises(ValueError, match="known"):
    metrics.list_ranks(np.array([[1, 2]]), np.array([1]), np.array([1, 2]))
  with pytest.raises(ValueError, match="ties"):
    metrics.ranks(np.zeros((1, 2)), [0], ties="random")
  with pytest.raises(ValueError, match="NaN"):
    metrics.ranks(np.array([[0.0, np.nan]]), [0])
  with pytest.raises(ValueError, match="answers outside"):
    metrics.ranks(np.zeros((1, 2)), [2])
  with pytest.raises(ValueError, match="filtered"):
    metrics.ranks(np.zeros((1, 2)), [0], np.zeros((1, 3), bool))
  with pytest.raises(ValueError, match="1-based"):
    metrics.summarize([0.5])


def test_accuracy_by_language_is_a_macro_mean_over_sorted_languages():
  got = metrics.accuracy_by_language([("fr", True), ("en", False), ("fr", False), ("en", 0),
                                      ("de", np.True_)])
  assert list(got) == ["de", "en", "fr", "avg"]
  assert got == {"de": 1.0, "en": 0.0, "fr": 0.5, "avg": 0.5}
  assert list(metrics.accuracy_by_language([])) == ["avg"]
  assert np.isnan(metrics.accuracy_by_language(iter([]))["avg"])
