"""Cross-lingual NER (token classification) and RELX (sequence classification).

Both follow the zero-shot protocol of `finetune.py`: fine-tune on English,
select on English dev, test on every language, several seeds.

- NER: each word is tokenized alone; its first piece carries the word's tag,
  the other pieces are ignored (IGNORE); sentences longer than the
  sequence are cut. Metric: entity-level micro F1 over IOB2 spans (a span
  counts when type, start and end all match).
- RELX: the sentence with `<e1>`/`</e1>` and `<e2>`/`</e2>` written around
  the two entities as text, classified from the first token. Metrics:
  accuracy and macro F1 over relation labels.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from kmlm_jax.evaluation.finetune import IGNORE, FinetuneConfig, run_seeds


def encode_sentence(vocab, tokens: Sequence[str], tags: Sequence[str], labels: Mapping[str, int],
                    max_length: int) -> dict:
  ids, targets = [vocab.bos_id], [IGNORE]
  for token, tag in zip(tokens, tags):
    pieces = vocab.encode(token) or [vocab.unk_id]
    if len(ids) + len(pieces) > max_length - 1:
      break
    ids += pieces
    targets += [labels[tag]] + [IGNORE] * (len(pieces) - 1)
  ids.append(vocab.eos_id)
  targets.append(IGNORE)
  return _pad(vocab, ids, targets, max_length)


def _pad(vocab, ids: list[int], labels: list[int] | int, max_length: int) -> dict:
  """One example's arrays, right-padded to `max_length`; token `labels` padded with IGNORE."""
  pad = max_length - len(ids)
  return {"input_ids": np.array(ids + [vocab.pad_id] * pad, np.int32),
          "attention_mask": np.array([1] * len(ids) + [0] * pad, np.int32),
          "labels": (np.array(labels + [IGNORE] * pad, np.int32) if isinstance(labels, list)
                     else np.int32(labels))}


def spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """IOB2 entity spans (type, start, end) of one tag sequence."""
  out, start, kind = set(), None, None
  for i, tag in enumerate(list(tags) + ["O"]):
    if start is not None and not (tag.startswith("I-") and tag[2:] == kind):
      out.add((kind, start, i))
      start = None
    if tag.startswith("B-") or (tag.startswith("I-") and start is None):
      start, kind = i, tag[2:]
  return out


def span_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
  tp = fp = fn = 0
  for g, p in zip(gold, predicted):
    gs, ps = spans(g), spans(p)
    tp, fp, fn = tp + len(gs & ps), fp + len(ps - gs), fn + len(gs - ps)
  return 2 * tp / max(2 * tp + fp + fn, 1)


def run_ner(model_fn, vocab, train, dev, tests: Mapping[str, Sequence], labels: Sequence[str],
            config: FinetuneConfig, devices=None) -> dict:
  """`train`/`dev`/`tests[lang]`: TaggedSentence lists (IOB2); returns F1 per language."""
  index = {t: i for i, t in enumerate(labels)}
  encode = lambda sents: [encode_sentence(vocab, s.tokens, s.tags, index, config.max_length)
                          for s in sents]

  def f1(predicted, examples):  # over the words' first pieces (labels != IGNORE)
    words = [e["labels"] != IGNORE for e in examples]
    return span_f1([[labels[t] for t in e["labels"][w]] for e, w in zip(examples, words)],
                   [[labels[t] for t in p[w]] for p, w in zip(predicted, words)])

  return run_seeds(model_fn, encode(train), encode(dev), {l: encode(s) for l, s in tests.items()},
                   f1, config, devices, task="NER")


def encode_relx(vocab, example, labels: Mapping[str, int], max_length: int) -> dict:
  text = example.text
  (a, b), (c, d) = example.e1, example.e2
  marks = sorted([(a, "<e1> "), (b, " </e1>"), (c, "<e2> "), (d, " </e2>")], key=lambda m: m[0],
                 reverse=True)
  for pos, mark in marks:
    text = text[:pos] + mark + text[pos:]
  ids = [vocab.bos_id] + vocab.encode(text)[:max_length - 2] + [vocab.eos_id]
  return _pad(vocab, ids, labels[example.relation], max_length)


def macro_f1(predicted: np.ndarray, gold: np.ndarray, num_labels: int) -> float:
  scores = []
  for k in range(num_labels):
    tp = int(((predicted == k) & (gold == k)).sum())
    counted = int((predicted == k).sum() + (gold == k).sum())  # 2 tp + fp + fn
    if counted:
      scores.append(2 * tp / counted)
  return float(np.mean(scores)) if scores else float("nan")


def run_relx(model_fn, vocab, train, dev, tests: Mapping[str, Sequence], labels: Sequence[str],
             config: FinetuneConfig, devices=None) -> dict:
  """`train`/`dev`/`tests[lang]`: RelxExample lists; returns macro F1 per language."""
  index = {r: i for i, r in enumerate(labels)}
  encode = lambda xs: [encode_relx(vocab, x, index, config.max_length) for x in xs]

  def score(predicted, examples):
    return macro_f1(predicted, np.asarray([e["labels"] for e in examples]), len(labels))

  return run_seeds(model_fn, encode(train), encode(dev), {l: encode(x) for l, x in tests.items()},
                   score, config, devices, task="RELX")
