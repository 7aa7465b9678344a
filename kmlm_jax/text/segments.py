"""Tokenize a corpus sample's segments, keeping each token's role.

A sample (`kmlm_jax.kg.samples.Sample`) is rendered as its text with every
linker replaced by the mask token, the way the original KMLM data was fed to
the tokenizer. Here the text is cut at the linkers, each piece is tokenized
with character offsets, and the mask id is inserted for each linker; every
token then takes the role, mention and sentence of the segment its first
character belongs to (a space belongs to the segment after it).

Output arrays, all [n] int32, `<s>` and `</s>` (or `[CLS]`/`[SEP]`) included:
  ids: token ids; roles: ROLE_*; mentions: index of the segment the token
  belongs to (-1 for special tokens); sentences: sentence index (-1 for
  special tokens).
"""

from __future__ import annotations

import numpy as np

from kmlm_jax.kg.samples import ROLE_LINKER, ROLE_TEXT, glued

SPECIAL = -1


def tokenize_segments(vocab, segments, roles, sentence_ids):
  """(ids, roles, mentions, sentences) int32 arrays of one sample."""
  tokens = [(vocab.bos_id, ROLE_TEXT, SPECIAL, SPECIAL)]  # (id, role, mention, sentence)
  piece, owner = "", []  # text of the current linker-free piece, segment of each char

  def flush():
    nonlocal piece, owner
    if piece:
      ids, begins, _ = vocab.encode_with_offsets(piece)
      for t, b in zip(ids, begins):
        seg = owner[min(b, len(owner) - 1)]
        tokens.append((t, roles[seg], seg, sentence_ids[seg]))
    piece, owner = "", []

  for k, (seg, role) in enumerate(zip(segments, roles)):
    if role == ROLE_LINKER:
      flush()
      tokens.append((vocab.mask_id, ROLE_LINKER, k, sentence_ids[k]))
      continue
    if piece and not glued(seg, role):
      piece += " "
      owner.append(k)  # the space belongs to the segment after it
    piece += seg
    owner.extend([k] * len(seg))
  flush()
  tokens.append((vocab.eos_id, ROLE_TEXT, SPECIAL, SPECIAL))
  return tuple(np.asarray(a, np.int32) for a in zip(*tokens))


def tokenize_text(vocab, text: str, max_length: int) -> list[np.ndarray]:
  """A text line as `<s> ... </s>` windows of at most `max_length` ids (none if empty)."""
  ids, width = vocab.encode(text), max_length - 2
  return [np.asarray([vocab.bos_id] + ids[i:i + width] + [vocab.eos_id], np.int32)
          for i in range(0, len(ids), width)]
