"""Link-prediction results per language in the layout of Prix-LM Table 1.

Ranks come from `kmlm_jax.evaluation.metrics` (`list_ranks` for a beam
search's ranked lists, `ranks` for scored candidates): 1-based, filtered
(other known true objects of the same (s, p) skipped), inf for an answer
missing from a list (it misses every Hits@k and adds 0 to MRR; the paper
reports no MRR because beam lists are partial, so this makes it a lower
bound). Hits@k and MRR are fractions in [0, 1]; `table1_markdown` prints
percentages.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from kmlm_jax.evaluation import metrics as metrics_lib

METRICS = ("hits@1", "hits@3", "hits@10", "mrr")
_LABELS = {"hits@1": "Hits@1", "hits@3": "Hits@3", "hits@10": "Hits@10", "mrr": "MRR"}


def metrics(ranks: np.ndarray) -> dict[str, float]:
  """Hits@1/3/10 and MRR (fractions) of 1-based ranks (inf allowed); NaN for no query."""
  return metrics_lib.summarize(ranks, (1, 3, 10))


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
