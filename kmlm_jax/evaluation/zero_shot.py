"""Zero-shot evaluation with the MLM head: cloze probes and XLR by masked scoring.

Both rank candidates by the mean log-probability the model gives to a
candidate's tokens when all of them are replaced by `<mask>` at once
(independent per token, length-normalised):

- Cloze probes (mLAMA-style candidate ranking): each held-out fact
  `(s, r, o)` becomes its template with `[X]` = s and `[Y]` = a candidate;
  candidates are the gold object plus up to `max_distractors` other objects
  of the same relation in the KG, in the probe's language. The candidate's
  tokens are found by character offsets in the filled sentence, so they are
  tokenized in context. Metric: accuracy (gold ranked first).
- XLR (KMLM appendix A.2) without fine-tuning: the item's context triples and
  the question pair, rendered in the pretraining format (`h <mask> r <mask>
  t.` sentences); each of the 6 relation choices is put into the question
  sentence and scored as a masked relation span, exactly the reasoning
  stream's 3-cycle task. Metric: accuracy (chance 1/6).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kmlm_jax.evaluation import metrics, progress
from kmlm_jax.kg.graph import KnowledgeGraph
from kmlm_jax.kg.samples import ROLE_RELATION, triple_segments
from kmlm_jax.text.segments import tokenize_segments


@dataclasses.dataclass
class Scorer:
  """Batched, jitted masked scoring with one model.

  Sequences are padded to `length` tokens and to `batch` rows; each holds at
  most `max_masked` scored positions.
  """

  graphdef: object
  params: dict
  vocab: object
  length: int = 128
  batch: int = 64
  max_masked: int = 24

  def __post_init__(self):
    graphdef = self.graphdef

    @jax.jit
    def score(params, ids, segments, positions, targets, weights):
      model = nnx.merge(graphdef, params)
      hidden = model(ids, segment_ids=segments).hidden
      logp = jax.nn.log_softmax(model.mlm_logits(hidden, positions), -1)
      picked = jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
      return (picked * weights).sum(-1), weights.sum(-1)

    self._score = score
    self.compiled = False  # the first batch compiles `score`

  def mean_logprob(self, sequences: Sequence[tuple[np.ndarray, np.ndarray]],
                   desc: str = "scoring") -> np.ndarray:
    """[N] mean log-prob of the masked tokens; each item is (ids [n], masked bool [n]).

    The masked positions are replaced by `<mask>` here. A bar named `desc` (stderr)
    counts the batches.
    """
    out = np.full(len(sequences), -np.inf)
    compiling = None if self.compiled else "the masked scorer"
    with progress.bar(-(-len(sequences) // self.batch), desc, "batch", compiling) as bar:
      for start in range(0, len(sequences), self.batch):
        out[start:start + self.batch] = self._batch(sequences[start:start + self.batch])
        bar.update(1)
    return out

  def _batch(self, chunk) -> np.ndarray:
    """Mean log-probs of at most `batch` sequences (-inf for an unscorable one)."""
    ids = np.full((self.batch, self.length), self.vocab.pad_id, np.int32)
    segs = np.zeros((self.batch, self.length), np.int32)
    pos, tgt = np.zeros((2, self.batch, self.max_masked), np.int32)
    w = np.zeros((self.batch, self.max_masked), np.float32)
    for r, (seq, masked) in enumerate(chunk):
      where = np.flatnonzero(masked)
      if len(seq) > self.length or not 0 < len(where) <= self.max_masked:
        continue  # unscorable: stays -inf, counted as wrong
      ids[r, :len(seq)] = np.where(masked, self.vocab.mask_id, seq)
      segs[r, :len(seq)] = 1
      pos[r, :len(where)], tgt[r, :len(where)], w[r, :len(where)] = where, seq[where], 1
    total, count = jax.device_get(self._score(self.params, ids, segs, pos, tgt, w))
    self.compiled = True
    n = len(chunk)
    return np.where(count[:n] > 0, total[:n] / np.maximum(count[:n], 1), -np.inf)


def _fill(template: str, subject: str, candidate: str) -> tuple[str, int, int]:
  """The sentence and the character span of `candidate` in it."""
  before, after = template.split("[Y]", 1)
  before = before.replace("[X]", subject)
  text = before + candidate + after.replace("[X]", subject)
  return text, len(before), len(before) + len(candidate)


def _span_sequence(vocab, text: str, begin: int, end: int) -> tuple[np.ndarray, np.ndarray]:
  ids, begins, ends = vocab.encode_with_offsets(text)
  masked = [b < end and e > begin and text[max(b, begin):min(e, end)].strip() != ""
            for b, e in zip(begins, ends)]
  seq = np.asarray([vocab.bos_id] + ids + [vocab.eos_id], np.int32)
  return seq, np.asarray([False] + masked + [False])


def probe_accuracy(scorer: Scorer, graph: KnowledgeGraph, probes: Sequence[dict], seed: int = 0,
                   max_distractors: int = 20) -> dict[str, float]:
  """Accuracy per language of candidate ranking (see module docstring)."""
  rng = np.random.default_rng(seed)
  pid = {p: i for i, p in enumerate(graph.relation_ids)}
  tails = {r: np.unique(graph.triples[graph.triples[:, 1] == r, 2]) for r in
           range(graph.num_relations)}
  sequences, owners = [], []
  for k, probe in enumerate(probes):
    labels = graph.entity_names[probe["lang"]].labels
    pool = [labels[t] for t in tails[pid[probe["relation"]]] if labels[t]]
    others = sorted(set(pool) - {probe["object"]})
    distractors = list(rng.permutation(others)[:max_distractors]) if others else []
    for c, candidate in enumerate([probe["object"]] + distractors):
      text, b, e = _fill(probe["template"], probe["subject"], candidate)
      sequences.append(_span_sequence(scorer.vocab, text, b, e))
      owners.append((k, c))
  best = _best_candidates(owners, scorer.mean_logprob(sequences, "ranking probes"))
  return metrics.accuracy_by_language((p["lang"], best[k] == 0) for k, p in enumerate(probes))


def xlr_accuracy(scorer: Scorer, graph: KnowledgeGraph, items: Sequence[dict]) -> dict[str, float]:
  """Zero-shot XLR accuracy per language (see module docstring)."""
  pid = {p: i for i, p in enumerate(graph.relation_ids)}
  sequences, owners = [], []
  for k, item in enumerate(items):
    question = item["triples"].index(item["question_triple"])
    e_names = graph.entity_names[item["lang"]].labels
    r_names = graph.relation_names[item["lang"]].labels
    triples = [[int(x) for x in graph.triples[row]] for row in item["triples"]]
    for c, choice in enumerate(item["choice_ids"]):
      triples[question][1] = pid[choice]
      # Span and item ids are not tokenized: only the segments, roles and sentences count.
      parts = [triple_segments(e_names[h], r_names[r], e_names[t], (h, r, t), (-1, -1, -1), s)
               for s, (h, r, t) in enumerate(triples)]
      segs, roles, _, sents, _ = (sum(column, []) for column in zip(*parts))
      ids, tok_roles, mentions, _ = tokenize_segments(scorer.vocab, segs, roles, sents)
      relation_segment = 6 * question + 2
      sequences.append((ids, (mentions == relation_segment) & (tok_roles == ROLE_RELATION)))
      owners.append((k, c))
  best = _best_candidates(owners, scorer.mean_logprob(sequences, "scoring XLR choices"))
  return metrics.accuracy_by_language((it["lang"], best[k] == it["label"])
                                      for k, it in enumerate(items))


def _best_candidates(owners, scores) -> dict[int, int]:
  """item -> index of its best-scoring candidate (the first one on ties)."""
  best: dict[int, tuple[float, int]] = {}
  for (k, c), s in zip(owners, scores):
    if k not in best or s > best[k][0]:
      best[k] = (s, c)
  return {k: c for k, (_, c) in best.items()}
