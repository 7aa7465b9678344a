"""Trimming an XLM-R `tokenizer.json` to the pieces a corpus uses.

A small model trained on a small corpus (the CPU demo) does not need
250,002 embedding rows: the vocabulary projection would dominate its step.
`trim_tokenizer_json` keeps the special tokens and every piece that the
full tokenizer produces on the given texts, in their original order, and
writes a new `tokenizer.json` (Unigram scores kept). On those texts the
trimmed tokenizer segments exactly as the full one (the best Unigram path
only uses kept pieces, and removing other pieces cannot create a better
one); only the ids change. Both this project's sentencepiece vocabulary and
transformers load the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from kmlm_jax.text.vocab import XLMRSentencePiece


def used_ids(vocab: XLMRSentencePiece, texts: Iterable[str]) -> np.ndarray:
  """Sorted unique ids the tokenizer produces on `texts` (specials included)."""
  seen = np.zeros(vocab.vocab_size, bool)
  seen[[vocab.bos_id, vocab.pad_id, vocab.eos_id, vocab.unk_id, vocab.mask_id]] = True
  for text in texts:
    seen[vocab.encode(text)] = True
  return np.flatnonzero(seen)


def trim_tokenizer_json(source: Path | str, texts: Iterable[str], target: Path | str) -> int:
  """Writes the trimmed tokenizer.json to `target`; returns its vocabulary size."""
  keep = used_ids(XLMRSentencePiece.from_file(source), texts)
  return write_trimmed(source, keep, target)


def write_trimmed(source: Path | str, keep: np.ndarray, target: Path | str) -> int:
  """Writes `source` kept to the sorted ids `keep` (specials included) to `target`;
  returns its vocabulary size."""
  source, target = Path(source), Path(target)
  spec = json.loads(source.read_text(encoding="utf-8"))
  vocab = spec["model"]["vocab"]
  spec["model"]["vocab"] = [vocab[i] for i in keep]
  new_id = {int(old): new for new, old in enumerate(keep)}
  spec["model"]["unk_id"] = new_id[3]
  for token in spec.get("added_tokens", []):
    token["id"] = new_id[token["id"]]
  post = spec.get("post_processor") or {}
  for entry in post.get("special_tokens", {}).values():
    entry["ids"] = [new_id[i] for i in entry["ids"]]
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
  return len(keep)
