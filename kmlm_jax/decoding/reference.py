"""Reference Prix-LM decoding: the paper's Algorithm 1, written plainly.

One full `Encoder` forward (batch 1, no cache; the prefix-causal mask, or
the fully causal one under `model.config.attention == "causal"`) per
hypothesis, a Python dict trie, Python lists for the beams. It follows the
rules documented in `beam_search.py` (finished hypotheses leave the beam,
`exclude` applied inside the search, ties by (score, token sequence) for
beams and (score, entity id) for the result) and never fails when no entity
is reached (the list is all -1). This is the test and benchmark reference,
and `exhaustive_scores` scores every candidate by teacher forcing.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Sequence

import jax
import numpy as np
from flax import nnx

from kmlm_jax.models.masks import decoding_mask


@dataclasses.dataclass
class Node:
  children: dict[int, "Node"] = dataclasses.field(default_factory=dict)
  entity: int = -1  # set on the node reached by a name's [EOS]


def dict_trie(names: Sequence[Sequence[int]], eos_id: int) -> Node:
  """Nested-dict trie of `names` (+ [EOS]); later duplicates are ignored."""
  root = Node()
  for entity, name in enumerate(names):
    tokens = list(name)
    if tokens and tokens[-1] == eos_id:
      tokens = tokens[:-1]
    if not tokens or eos_id in tokens:
      raise ValueError(f"entity {entity}: empty name or [EOS] inside it")
    node = root
    for token in tokens + [eos_id]:
      node = node.children.setdefault(int(token), Node())
    if node.entity < 0:
      node.entity = entity
  return root


def _sequence(config, prefix: Sequence[int], tokens: Sequence[int], length: int):
  """Right-padded ids, segment ids and prefix mask of one `prefix + tokens` row."""
  ids = np.full((1, length), config.pad_token_id, np.int32)
  seq = list(prefix) + list(tokens)
  ids[0, :len(seq)] = seq
  segments = np.zeros((1, length), np.int32)
  segments[0, :len(seq)] = 1
  in_prefix = np.zeros((1, length), bool)
  in_prefix[0, :len(prefix)] = True
  return ids, segments, in_prefix


@functools.partial(jax.jit, static_argnums=0)
def _forward_logp(graphdef, state, ids, segments, in_prefix, positions):
  """Full-vocabulary log-probabilities at `positions` [B, P] -> [B, P, V]."""
  model = nnx.merge(graphdef, state)
  attention = decoding_mask(segments, in_prefix, model.config.attention)
  hidden = model(ids, segment_ids=segments, attention=attention).hidden
  return jax.nn.log_softmax(model.mlm_logits(hidden, positions), axis=-1)


class ReferenceSearch:
  """Algorithm 1 with one uncached forward per hypothesis.

  `length` fixes the padded sequence length (one compilation); it must hold
  the longest prefix plus the longest name.
  """

  def __init__(self, model, names: Sequence[Sequence[int]], eos_id: int, *, num_beams: int,
               length: int):
    self.config = model.config
    self.graphdef, self.state = nnx.split(model)
    self.trie = dict_trie(names, eos_id)
    self.eos_id, self.num_beams, self.length = eos_id, num_beams, length
    self.max_len = max(len(n) + (0 if n[-1] == eos_id else 1) for n in names)

  def next_logp(self, prefix: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
    """[V] log P(next | prefix, tokens), from a full forward of this hypothesis alone."""
    ids, segments, in_prefix = _sequence(self.config, prefix, tokens, self.length)
    position = np.array([[len(prefix) + len(tokens) - 1]], np.int32)
    return np.asarray(_forward_logp(self.graphdef, self.state, ids, segments, in_prefix,
                                    position))[0, 0]

  def __call__(self, prefix: Sequence[int], exclude: Iterable[int] = ()):
    """One query (unpadded prefix ids) -> (entities [K] int, scores [K] float; -1/inf pads)."""
    if len(prefix) + self.max_len - 1 > self.length:
      raise ValueError(f"length {self.length} cannot hold the prefix and the longest name")
    exclude = {int(e) for e in exclude}
    # Scores are summed in fp32, token by token, like the jitted search.
    beams = [((), np.float32(0.0), self.trie)]  # (tokens, summed NLL, trie node)
    finished: dict[int, np.float32] = {}
    for _ in range(self.max_len):
      candidates = []
      for tokens, score, node in beams:
        logp = self.next_logp(prefix, tokens)
        for token, child in node.children.items():
          total = score - logp[token]
          if token == self.eos_id:
            if child.entity not in exclude:
              finished[child.entity] = total
          else:
            candidates.append((total, tokens + (token,), child))
      candidates.sort(key=lambda c: (c[0], c[1]))
      beams = [(tokens, score, node) for score, tokens, node in candidates[:self.num_beams]]
      if not beams:
        break
    ranked = sorted(finished.items(), key=lambda item: (item[1], item[0]))[:self.num_beams]
    entities = np.full(self.num_beams, -1, np.int32)
    scores = np.full(self.num_beams, np.inf, np.float32)
    for i, (entity, score) in enumerate(ranked):
      entities[i], scores[i] = entity, score
    return entities, scores


def exhaustive_scores(model, prefix: Sequence[int], names: Sequence[Sequence[int]],
                      eos_id: int, *, batch_size: int = 64,
                      length: int | None = None) -> np.ndarray:
  """[N] float32 summed NLL of every name + [EOS] after `prefix` (teacher forcing).

  Summed token by token in fp32, the order the beam search adds them. Rows
  are padded to `length` tokens (default: prefix + longest name rounded up
  to a multiple of 16, so that similar queries share one compilation).
  """
  graphdef, state = nnx.split(model)
  seqs = [list(n) if n[-1] == eos_id else list(n) + [eos_id] for n in names]
  width = max(len(s) for s in seqs)
  length = -(-(len(prefix) + width) // 16) * 16 if length is None else length
  if len(prefix) + width > length:
    raise ValueError(f"length {length} cannot hold the prefix and the longest name")
  scores = np.zeros(len(seqs), np.float32)
  for lo in range(0, len(seqs), batch_size):
    chunk = seqs[lo:lo + batch_size] + [seqs[0]] * (batch_size - len(seqs[lo:lo + batch_size]))
    rows = [_sequence(model.config, prefix, s[:-1], length) for s in chunk]
    ids, segments, in_prefix = (np.concatenate(x) for x in zip(*rows))
    positions = np.broadcast_to(np.arange(width) + len(prefix) - 1, (batch_size, width))
    logp = np.asarray(_forward_logp(graphdef, state, ids, segments, in_prefix,
                                    np.ascontiguousarray(positions, np.int32)))
    for i, s in enumerate(chunk[:len(seqs) - lo]):
      total = np.float32(0.0)
      for j, t in enumerate(s):
        total = total - logp[i, j, t]
      scores[lo + i] = total
  return scores


def exhaustive_ranking(scores: np.ndarray, k: int, exclude: Iterable[int] = ()):
  """Top-k (entities, scores) by (score, entity id), without `exclude`; -1/inf pads."""
  keep = np.setdiff1d(np.arange(scores.shape[0]), np.fromiter(exclude, np.int64))
  order = keep[np.lexsort((keep, scores[keep]))][:k]
  entities = np.full(k, -1, np.int32)
  out = np.full(k, np.inf, np.float32)
  entities[:order.shape[0]], out[:order.shape[0]] = order, scores[order]
  return entities, out
