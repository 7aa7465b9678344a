"""Results tables (Markdown, like the papers' tables) and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

SOURCE_LANG = "en"


def avg_tgt(scores: Mapping[str, float]) -> float:
  """Mean over the target (non-English) languages, as KMLM's avg_tgt."""
  values = [v for l, v in scores.items() if l != SOURCE_LANG and np.isfinite(v)]
  return float(np.mean(values)) if values else float("nan")


def task_table(task: str, scores: Mapping[str, Mapping[str, float]], languages: Sequence[str],
               baseline: str | None = None,
               spread: Mapping[str, Mapping[str, float]] | None = None) -> str:
  """| model | lang... | avg_tgt | delta | for one task; `scores[model][lang]` (fractions)
  printed as percentages. `delta` is avg_tgt minus the baseline's; `spread` adds "± std" cells.
  """
  header = "| " + task + " | " + " | ".join(languages) + " | avg_tgt | delta |"
  lines = [header, "|---" * (len(languages) + 3) + "|"]
  base = avg_tgt(scores[baseline]) if baseline in scores else None
  for model, by_lang in scores.items():
    std = (spread or {}).get(model, {})
    cells = [f"{by_lang.get(l, float('nan')) * 100:.1f}"
             + (f" ± {std[l] * 100:.1f}" if l in std else "") for l in languages]
    a = avg_tgt(by_lang)
    delta = "0" if model == baseline else (f"{(a - base) * 100:+.1f}" if base is not None
                                            else "-")
    lines.append(f"| {model} | " + " | ".join(cells) + f" | {a * 100:.1f} | {delta} |")
  return "\n".join(lines) + "\n"


def bar_plot(path: Path, title: str, scores: Mapping[str, Mapping[str, float]],
             languages: Sequence[str], chance: float | None = None) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(languages) * len(scores)), 3.6))
  width = 0.8 / max(1, len(scores))
  x = np.arange(len(languages))
  for i, (model, by_lang) in enumerate(scores.items()):
    values = [100 * by_lang.get(l, np.nan) for l in languages]
    ax.bar(x + (i - (len(scores) - 1) / 2) * width, values, width, label=model)
  if chance is not None:
    ax.axhline(100 * chance, color="gray", linestyle="--", linewidth=1, label="chance")
  top = np.nanmax([100 * v for s in scores.values() for v in s.values()] + [100 * (chance or 0)])
  ax.set_ylim(0, max(5.0, 1.15 * top))
  if top == 0:
    ax.text(0.5, 0.5, "all scores are 0", transform=ax.transAxes, ha="center", color="gray")
  ax.set_xticks(x, languages)
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def read_tensorboard(logdir: Path) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value)] from the event files under `logdir`."""
  import tensorflow as tf
  curves: dict[str, list[tuple[int, float]]] = {}
  for f in sorted(Path(logdir).glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(f)):
      for value in event.summary.value:
        v = value.simple_value if value.HasField("simple_value") else \
            float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else None
        if v is not None:
          curves.setdefault(value.tag, []).append((event.step, float(v)))
  return curves


def curves_plot(path: Path, runs: Mapping[str, Path],
                tags: Sequence[str] = ("mlm/loss", "knowledge/loss", "reasoning/loss",
                                       "causal/loss")) -> list[str]:
  """Training loss per stream of each run (TensorBoard logs); returns the tags drawn."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  data = {name: read_tensorboard(d) for name, d in runs.items()}
  present = [t for t in tags if any(t in c for c in data.values())]
  if not present:
    return []
  fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3.2), squeeze=False)
  for ax, tag in zip(axes[0], present):
    for name, curves in data.items():
      if tag in curves:
        steps, values = zip(*sorted(curves[tag]))
        ax.plot(steps, values, label=name)
    ax.set_title(tag)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return present
