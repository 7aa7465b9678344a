"""X-FACTR / mLAMA cloze probing with single- and multi-token answers.

For a fact (s, r, o) and its template, `[X]` is replaced by s and `[Y]` by
k mask tokens for every k in 1..max_tokens; the prediction for each k is
decoded in one of two ways (X-FACTR section 4):

- independent: every mask takes its argmax in one forward pass;
- confidence: one mask at a time, the most confident first, re-predicting
  the rest after each fill (k forward passes).

The k whose filled tokens have the highest mean log-probability wins. A
prediction is correct when it equals the gold object's token ids (the gold
tokenized alone, as the masks are), so single-token objects are the k = 1
case. Accuracy per language and relation. The text around `[Y]` is
tokenized in two pieces, so a piece glued to the object ("[Y]." or
"[X]の首都は[Y]である。") starts with sentencepiece's word-start piece, as
in X-FACTR's own implementation with masks in the middle of a sentence.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kmlm_jax.evaluation import metrics, progress


@dataclasses.dataclass
class ClozeModel:
  """Batched MLM predictions at masked positions (jitted): the head runs on the masked
  positions only, so memory is [batch, masks, V], not [batch, length, V]."""

  graphdef: object
  params: dict
  vocab: object
  length: int = 64
  batch: int = 64

  def __post_init__(self):
    graphdef = self.graphdef

    @jax.jit
    def best(params, ids, mask, where):
      model = nnx.merge(graphdef, params)
      hidden = model(ids, attention_mask=mask).hidden
      hidden = jnp.take_along_axis(hidden, where[..., None], axis=1)
      logp = jax.nn.log_softmax(model.mlm_logits(hidden).astype(jnp.float32), -1)
      return logp.argmax(-1), logp.max(-1)

    self._best = best
    self.compiled = False  # the first batch compiles `best`

  def best_tokens(self, rows: Sequence[np.ndarray], wheres: Sequence[np.ndarray],
                  bar=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(argmax token, its log-probability) at each of a row's positions `where`; `bar`
    counts batches."""
    out = []
    k = max(len(w) for w in wheres)
    for lo in range(0, len(rows), self.batch):
      chunk, spots = rows[lo:lo + self.batch], wheres[lo:lo + self.batch]
      ids = np.full((self.batch, self.length), self.vocab.pad_id, np.int32)
      mask = np.zeros((self.batch, self.length), np.int32)
      where = np.zeros((self.batch, k), np.int32)
      for i, (r, w) in enumerate(zip(chunk, spots)):
        ids[i, :len(r)], mask[i, :len(r)], where[i, :len(w)] = r, 1, w
      tokens, scores = jax.device_get(self._best(self.params, ids, mask, where))
      self.compiled = True
      out += [(tokens[i, :len(w)], scores[i, :len(w)]) for i, w in enumerate(spots)]
      if bar is not None:
        bar.update(1)
    return out


def _template_rows(vocab, template: str, subject: str, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Token ids with k masks for [Y], and the mask positions."""
  before, after = template.split("[Y]", 1)
  left = vocab.encode(before.replace("[X]", subject).rstrip())
  right_text = after.replace("[X]", subject).strip()
  right = vocab.encode(right_text) if right_text else []
  ids = [vocab.bos_id] + left + [vocab.mask_id] * k + right + [vocab.eos_id]
  where = np.arange(1 + len(left), 1 + len(left) + k)
  return np.asarray(ids, np.int32), where


def row_length(vocab, probe: dict, max_tokens: int) -> int:
  """Tokens of the probe's longest row (with `max_tokens` masks)."""
  return len(_template_rows(vocab, probe["template"], probe["subject"], max_tokens)[0])


def predict(model: ClozeModel, probes: Sequence[dict], max_tokens: int = 5,
            method: str = "independent", bar=None) -> list[list[int]]:
  """Predicted object token ids of each probe; `bar` counts the forward batches."""
  if method not in ("independent", "confidence"):
    raise ValueError(f"unknown decoding method {method!r}")
  best = [(-np.inf, []) for _ in probes]
  for k in range(1, max_tokens + 1):
    rows, wheres = zip(*[_template_rows(model.vocab, p["template"], p["subject"], k)
                         for p in probes])  # fresh arrays: confidence decoding fills them
    filled = [dict() for _ in probes]  # position -> (token, log-prob)
    for _ in range(1 if method == "independent" else k):
      predictions = model.best_tokens(rows, wheres, bar)
      for i, ((tokens, scores), where) in enumerate(zip(predictions, wheres)):
        slots = [j for j, w in enumerate(where) if w not in filled[i]]
        if method == "confidence":  # only the most confident open mask, then predict again
          slots = [slots[int(np.argmax(scores[slots]))]]
        for j in slots:
          filled[i][where[j]] = (int(tokens[j]), float(scores[j]))
          rows[i][where[j]] = tokens[j]
    for i, where in enumerate(wheres):
      score = float(np.mean([filled[i][w][1] for w in where]))
      if score > best[i][0]:
        best[i] = (score, [filled[i][w][0] for w in where])
  return [b[1] for b in best]


def accuracy(model: ClozeModel, probes: Sequence[dict], max_tokens: int = 5,
             method: str = "independent") -> dict:
  """{"by_language": {lang: acc}, "by_relation": {"lang/relation": acc}, "avg": float}.
  Shows a phase line and a bar over the forward batches (stderr)."""
  progress.phase(f"probing {len(probes)} queries ({method} decoding, 1 to {max_tokens} masks)")
  # `predict`'s batches: one pass per k (independent) or k passes (confidence)
  passes = max_tokens if method == "independent" else max_tokens * (max_tokens + 1) // 2
  total = passes * -(-len(probes) // model.batch)
  compiling = None if model.compiled else "the cloze model"
  with progress.bar(total, "probing", "batch", compiling) as bar:
    predicted = predict(model, probes, max_tokens, method, bar)
  correct = [pred == model.vocab.encode(p["object"]) for p, pred in zip(probes, predicted)]
  by_lang = metrics.accuracy_by_language((p["lang"], ok) for p, ok in zip(probes, correct))
  avg = by_lang.pop("avg")
  rel_hits = collections.defaultdict(list)
  for p, ok in zip(probes, correct):
    rel_hits[f"{p['lang']}/{p['relation']}"].append(ok)
  return {"by_language": by_lang,
          "by_relation": {k: float(np.mean(v)) for k, v in rel_hits.items()}, "avg": avg}
