"""Filtered link-prediction metrics over ranked entity lists (numpy only).

A method returns, per query (s, p, ?), a ranked list of entity ids (best
first, -1 pads; a beam search returns at most K). In the filtered setting
(Bordes et al., 2013) other known true objects of the same (s, p) are
removed from the list before the gold object's rank is read. An answer
missing from the list has rank infinity: it misses every Hits@k and adds
0 to MRR (the paper reports no MRR because beam lists are partial; this
convention makes it a lower bound).

Ranks are 1-based. Hits@k = mean(rank <= k); MRR = mean(1 / rank).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

METRICS = ("hits@1", "hits@3", "hits@10", "mrr")
_LABELS = {"hits@1": "Hits@1", "hits@3": "Hits@3", "hits@10": "Hits@10", "mrr": "MRR"}


def filtered_ranks(ranked: np.ndarray, answers: np.ndarray,
                   known: np.ndarray | None = None) -> np.ndarray:
  """[N] float 1-based filtered rank of each answer in its list (inf: absent).

  Args:
    ranked: [N, K] int entity ids, best first; negative entries are padding.
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
  found = hit.any(1)
  position = hit.argmax(1)
  counted = (~skip & (np.arange(k)[None, :] <= position[:, None])).sum(1)
  return np.where(found, counted, np.inf).astype(np.float64)


def metrics(ranks: np.ndarray) -> dict[str, float]:
  """Hits@1/3/10 and MRR of 1-based ranks (inf allowed); NaN for no query."""
  ranks = np.asarray(ranks, np.float64).reshape(-1)
  if (ranks < 1).any() or np.isnan(ranks).any():
    raise ValueError("ranks must be >= 1 (1-based) or inf")
  if ranks.size == 0:
    return {m: float("nan") for m in METRICS} | {"count": 0}
  return {"hits@1": float((ranks <= 1).mean()), "hits@3": float((ranks <= 3).mean()),
          "hits@10": float((ranks <= 10).mean()), "mrr": float((1.0 / ranks).mean()),
          "count": int(ranks.size)}


def metrics_by_language(ranks: np.ndarray, languages: Sequence[str]) -> dict[str, dict]:
  """Per-language metrics plus "avg" (macro mean over languages, as the paper)."""
  ranks = np.asarray(ranks, np.float64).reshape(-1)
  languages = np.asarray(languages)
  if languages.shape != ranks.shape:
    raise ValueError(f"{languages.shape[0]} languages for {ranks.shape[0]} ranks")
  out = {str(lang): metrics(ranks[languages == lang]) for lang in dict.fromkeys(languages)}
  if out:
    out["avg"] = {m: float(np.mean([v[m] for v in out.values()])) for m in METRICS}
    out["avg"]["count"] = int(ranks.size)
  return out


def _cell(value, percent: bool, digits: int) -> str:
  if value is None or (isinstance(value, float) and np.isnan(value)):
    return "-"
  return f"{value * 100 if percent else value:.{digits}f}"


def table1_markdown(results: Mapping[str, Mapping[str, Mapping[str, float]]],
                    languages: Sequence[str], *, metric_names: Sequence[str] = METRICS[:3],
                    stats: Mapping[str, Mapping[str, float]] | None = None,
                    percent: bool = True, digits: int = 1) -> str:
  """Markdown table in the layout of Prix-LM Table 1.

  Args:
    results: method -> language (and "avg") -> metric -> value in [0, 1],
      e.g. `{"TransE": metrics_by_language(...)}`.
    languages: column order; an "avg." column follows: the mean over the
      listed languages a method has results for.
    metric_names: row blocks, from `METRICS`.
    stats: optional rows above the metrics, e.g. `{"# entities (K)": {"en":
      2175}}` (printed as given).
  """
  unknown = [m for m in metric_names if m not in METRICS]
  if unknown:
    raise ValueError(f"unknown metrics {unknown}; known: {METRICS}")
  header = "| lang. → | " + " | ".join(languages) + " | avg. |"
  lines = [header, "|---" * (len(languages) + 2) + "|"]
  for name, row in (stats or {}).items():
    lines.append(f"| {name} | " + " | ".join(str(row.get(l, "-")) for l in languages) + " | - |")
  for metric in metric_names:
    lines.append(f"| **{_LABELS[metric]}** |" + " |" * (len(languages) + 1))
    for method, by_lang in results.items():
      values = [by_lang.get(l, {}).get(metric) for l in languages]
      present = [v for v in values if v is not None]
      avg = float(np.mean(present)) if present else None
      cells = [_cell(v, percent, digits) for v in values + [avg]]
      lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
