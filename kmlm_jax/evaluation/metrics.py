"""Filtered ranking metrics (numpy only): ranks, known-answer filtering, Hits@k, MRR; and
accuracy per language (`accuracy_by_language`).

Every ranking evaluation of the project (KG embeddings, Prix-LM beam search,
the adapters' cosine retrieval) goes through this module, so they share one
rank definition and one unit.

- Ranks are 1-based floats. `ranks` scores every candidate; `list_ranks`
  reads the rank from a ranked list (a beam search's), inf when the answer
  is absent.
- Filtered setting (Bordes et al., 2013): other known true answers of a
  query are left out of its ranking; the answer itself never is. Filters
  are (query row, candidate) pairs (`known_answers` builds them from true
  triples, `pairs` from per-query lists) or a [Q, C] bool mask
  (`filter_mask`).
- Ties (`ranks(..., ties=)`): "mean" (default) = 1 + #better + #tied / 2,
  "optimistic" = 1 + #better, "pessimistic" = 1 + #better + #tied (#tied
  counts other candidates scoring exactly as the answer). "mean" is the
  expected rank under a random tie break: the optimistic rule rewards a
  collapsed model (all scores equal: every answer at rank 1) and the
  pessimistic one punishes it beyond chance.
- Hits@k = mean(rank <= k) and MRR = mean(1 / rank) are fractions in
  [0, 1] (an absent answer adds 0 to MRR); reports that print percentages
  convert when printing.
"""

from __future__ import annotations

import collections
from typing import Iterable, Sequence

import numpy as np

TIES = ("mean", "optimistic", "pessimistic")


def filter_mask(answers, num_candidates: int, rows=(), cols=()) -> np.ndarray:
  """[Q, C] bool, True where candidate `cols[i]` is left out of query `rows[i]`'s
  ranking; never at the query's own answer."""
  answers = np.asarray(answers).reshape(-1)
  mask = np.zeros((answers.shape[0], num_candidates), bool)
  mask[np.asarray(rows, int), np.asarray(cols, int)] = True
  mask[np.arange(answers.shape[0]), answers] = False
  return mask


def pairs(exclude: Sequence[Sequence[int]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(rows, cols) of per-query candidate lists (a list of Q lists or a padded
  [Q, X] int array; negative entries are padding)."""
  if isinstance(exclude, np.ndarray):
    rows, cols = np.nonzero(exclude >= 0)
    return rows, exclude[rows, cols]
  rows = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
  cols = np.fromiter((c for e in exclude for c in e), int, rows.shape[0])
  keep = cols >= 0
  return rows[keep], cols[keep]


def known_answers(known, queries, *, predict_head: bool = False) -> tuple[np.ndarray,
                                                                          np.ndarray]:
  """(query row, entity) pairs of every known true answer of each query.

  known [M, 3] and queries [Q, 3] are (head, relation, tail) int triples; a
  query asks for its tail given (head, relation), or for its head given
  (relation, tail) with `predict_head`. The query's own answer is among
  the pairs when it is in `known` (`filter_mask` keeps it).
  """
  known, queries = np.asarray(known, np.int64), np.asarray(queries, np.int64)
  anchor_col, answer_col = (2, 0) if predict_head else (0, 2)
  width = max(int(known[:, 1].max(initial=0)), int(queries[:, 1].max(initial=0))) + 1
  key_known = known[:, anchor_col] * width + known[:, 1]
  order = np.argsort(key_known, kind="stable")
  key_known, answers = key_known[order], known[order, answer_col]
  key_query = queries[:, anchor_col] * width + queries[:, 1]
  lo = np.searchsorted(key_known, key_query, "left")
  counts = np.searchsorted(key_known, key_query, "right") - lo
  rows = np.repeat(np.arange(queries.shape[0]), counts)
  index = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts - lo, counts)
  return rows, answers[index]


def ranks(scores, answers, filtered=None, *, ties: str = "mean",
          lower_is_better: bool = False) -> np.ndarray:
  """[Q] float filtered 1-based rank of each answer among all candidates.

  Args:
    scores: [Q, C] score of every candidate of each query (higher is better
      unless `lower_is_better`, e.g. for distances). NaN raises.
    answers: [Q] int candidate index of each query's answer.
    filtered: optional [Q, C] bool, True: left out of the ranking (the answer
      itself never is), e.g. `filter_mask(...)`.
    ties: "mean", "optimistic" or "pessimistic" (module docstring).
  """
  if ties not in TIES:
    raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
  scores = np.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [Q, C]; got {scores.shape}")
  answers = np.asarray(answers).reshape(-1)
  if answers.shape[0] != scores.shape[0]:
    raise ValueError(f"{answers.shape[0]} answers for {scores.shape[0]} queries")
  if ((answers < 0) | (answers >= scores.shape[1])).any():
    raise ValueError(f"answers outside [0, {scores.shape[1]})")
  if np.isnan(scores).any():
    raise ValueError("scores contain NaN")
  if lower_is_better:
    scores = -scores
  rows = np.arange(scores.shape[0])
  counted = np.ones(scores.shape, bool) if filtered is None else ~np.asarray(filtered, bool)
  if counted.shape != scores.shape:
    raise ValueError(f"filtered must be {scores.shape}; got {counted.shape}")
  counted[rows, answers] = False  # the answer is not its own competitor
  target = scores[rows, answers][:, None]
  better = ((scores > target) & counted).sum(1)
  tied = ((scores == target) & counted).sum(1)
  share = {"mean": 0.5, "optimistic": 0.0, "pessimistic": 1.0}[ties]
  return 1.0 + better + share * tied


def list_ranks(ranked, answers, known=None) -> np.ndarray:
  """[N] float 1-based filtered rank of each answer in its ranked list (inf: absent).

  Args:
    ranked: [N, K] int entity ids, best first (a strict order: no ties);
      negative entries are padding.
    answers: [N] int gold entity of each query.
    known: optional [N, X] int other true entities of each query (-1 pads);
      they are skipped when counting (the answer itself never is). A repeat
      of an entity already listed is skipped too.
  """
  ranked = np.asarray(ranked)
  answers = np.asarray(answers).reshape(-1)
  if ranked.ndim != 2 or ranked.shape[0] != answers.shape[0]:
    raise ValueError(f"ranked must be [N, K] and answers [N]; got {ranked.shape} and "
                     f"{answers.shape}")
  n, k = ranked.shape
  skip = ranked < 0
  if known is not None:
    known = np.asarray(known)
    if known.ndim != 2 or known.shape[0] != n:
      raise ValueError(f"known must be [N={n}, X]; got {known.shape}")
    skip |= (ranked[:, :, None] == known[:, None, :]).any(-1) & (ranked != answers[:, None])
  earlier = np.tril(np.ones((k, k), bool), -1)  # [i, j]: j before i
  skip |= ((ranked[:, :, None] == ranked[:, None, :]) & earlier).any(-1)
  hit = (ranked == answers[:, None]) & ~skip
  position = hit.argmax(1)
  counted = (~skip & (np.arange(k)[None, :] <= position[:, None])).sum(1)
  return np.where(hit.any(1), counted, np.inf).astype(np.float64)


def _check(ranks) -> np.ndarray:
  ranks = np.asarray(ranks, np.float64).reshape(-1)
  if (ranks < 1).any() or np.isnan(ranks).any():
    raise ValueError("ranks must be >= 1 (1-based) or inf")
  return ranks


def hits_at(ranks, k: int) -> float:
  """Fraction of ranks <= k (NaN for no rank)."""
  ranks = _check(ranks)
  return float((ranks <= k).mean()) if ranks.size else float("nan")


def mrr(ranks) -> float:
  """Mean reciprocal rank, a fraction (inf ranks add 0; NaN for no rank)."""
  ranks = _check(ranks)
  return float((1.0 / ranks).mean()) if ranks.size else float("nan")


def summarize(ranks, ks: Sequence[int] = (1, 3, 10)) -> dict:
  """{"hits@k" for k in ks, "mrr": fractions in [0, 1], "count": number of ranks}."""
  ranks = _check(ranks)
  return {**{f"hits@{k}": hits_at(ranks, k) for k in ks}, "mrr": mrr(ranks),
          "count": int(ranks.size)}


def accuracy_by_language(outcomes: Iterable[tuple[str, bool]]) -> dict[str, float]:
  """{lang: fraction correct} of (lang, correct) pairs, languages sorted, then "avg": the
  macro mean over the languages (NaN for none)."""
  hits = collections.defaultdict(list)
  for lang, ok in outcomes:
    hits[lang].append(bool(ok))
  out = {lang: float(np.mean(hits[lang])) for lang in sorted(hits)}
  out["avg"] = float(np.mean(list(out.values()))) if out else float("nan")
  return out
