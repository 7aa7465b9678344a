"""XLR (KMLM appendix A.2) as multiple choice: fine-tune on English, test every language.

Each choice becomes one sequence `<s> context question </s></s> choice </s>`
(the context truncated from the left when it does not fit); the head scores
the C sequences of an item and the loss is cross-entropy over the choices.
Accuracy per language; mean and standard deviation over seeds.
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from kmlm_jax.evaluation.finetune import FinetuneConfig, run_seeds


def encode_item(vocab, item: dict, max_length: int) -> dict:
  """{"input_ids", "attention_mask": [C, T], "labels": int} of one XLR item."""
  question = " ".join(item["context"] + [item["question"]])
  stem = vocab.encode(question)
  rows = []
  for choice in item["choices"]:
    tail = [vocab.eos_id, vocab.eos_id] + vocab.encode(choice) + [vocab.eos_id]
    room = max_length - 1 - len(tail)
    rows.append([vocab.bos_id] + stem[max(0, len(stem) - room):] + tail)
  ids = np.full((len(rows), max_length), vocab.pad_id, np.int32)
  mask = np.zeros((len(rows), max_length), np.int32)
  for c, r in enumerate(rows):
    ids[c, :len(r)], mask[c, :len(r)] = r, 1
  return {"input_ids": ids, "attention_mask": mask, "labels": np.int32(item["label"])}


def accuracy(predicted: np.ndarray, examples: Sequence[dict]) -> float:
  labels = np.asarray([e["labels"] for e in examples])
  return float((predicted == labels).mean()) if len(labels) else float("nan")


def run(model_fn, vocab, items: Sequence[dict], config: FinetuneConfig, devices=None) -> dict:
  """Zero-shot cross-lingual XLR: per-language accuracy mean/std over seeds.

  `items` are XLR items of all splits and languages (the `eval/xlr` files);
  training and model selection use the English train and dev items.
  `model_fn(seed)` returns a fresh multiple-choice `TaskModel`.
  """
  split = collections.defaultdict(list)
  for item in items:
    split[(item["split"], item["lang"])].append(encode_item(vocab, item, config.max_length))
  train, dev = split[("train", "en")], split[("dev", "en")]  # checked by `run._read_xlr`
  tests = {lang: split[("test", lang)] for s, lang in sorted(split) if s == "test"}
  out = run_seeds(model_fn, train, dev, tests, accuracy, config, devices, task="XLR")
  return {"accuracy": out.pop("score"), **out, "counts": {l: len(t) for l, t in tests.items()}}
