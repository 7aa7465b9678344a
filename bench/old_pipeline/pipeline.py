"""seqio glue: data sources, preprocessors and the packing feature converter.

Per-example features after a task's preprocessors (the task's output):
  input_ids [n] int32 (masked), targets [n] int32 (original ids),
  loss_mask [n] int32 (1 where the token carries loss), stream [] int32.
`KMLMFeatureConverter` packs them into the rows of `packing.py`.

Tokenizing and masking run in Python (`tf.numpy_function`) on the
sentencepiece / transformers tokenizers, with randomness from seqio's
per-example stateless seeds, so a pipeline with a fixed seed replays
exactly. Examples longer than the sequence length are skipped and counted
in `SKIPPED` (knowledge and reasoning samples; text lines are cut into
windows instead); a non-UTF-8 text line is an error naming file and line,
or a counted skip with `skip_bad_lines=True`.
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path

import numpy as np
import seqio
import tensorflow as tf

from kmlm_jax.kg import records
from kmlm_jax.kg.samples import KIND_REASONING
from kmlm_jax.text import segments
from old_pipeline import masking, packing
from kmlm_jax.text.errors import CorpusError  # noqa: F401 (re-exported)
from kmlm_jax.text.vocab import load_vocab

# (task name, reason) -> count, for this process.
SKIPPED: collections.Counter = collections.Counter()
_lock = threading.Lock()


def _skip(task: str, reason: str) -> None:
  with _lock:
    SKIPPED[(task, reason)] += 1


def _rng(seed: np.ndarray) -> np.random.Generator:
  return np.random.default_rng([int(s) & 0xFFFFFFFF for s in np.ravel(seed)])


_EMPTY = (np.zeros(0, np.int32),) * 3
_BLOCK = 256  # examples per block handed from tf.data to the Python packer


# ---------------------------------------------------------------- sources


class NumberedTextLineDataSource(seqio.TextLineDataSource):
  """`seqio.TextLineDataSource` whose examples carry `file` and `line` (1-based),
  so that a bad line can be named. Missing or empty files fail when the
  dataset is made."""

  def __init__(self, split_to_filepattern, **kwargs):
    super().__init__(split_to_filepattern, **kwargs)

    def read(path):
      lines = tf.data.TextLineDataset(path).enumerate(start=1)
      return lines.map(lambda i, text: {"text": text, "file": path, "line": i})

    self._reader = read

  def list_shards(self, split: str):
    files = super().list_shards(split)
    if not files:
      raise CorpusError(f"no text files match {self._split_to_filepattern[split]!r}")
    empty = [f for f in files if tf.io.gfile.stat(f).length == 0]
    if len(empty) == len(files):
      raise CorpusError(f"every text file of {self._split_to_filepattern[split]!r} is empty: "
                        f"{empty[:3]}")
    return files


def feature_spec():
  """The `tf.io.parse_single_example` spec of a corpus record (`kmlm_jax.kg.records`)."""
  spec = {k: tf.io.FixedLenFeature([], tf.string) for k in records.SCALAR_BYTES}
  spec.update({k: tf.io.FixedLenFeature([], tf.int64) for k in records.SCALAR_INTS})
  spec["segments"] = tf.io.RaggedFeature(tf.string)
  spec.update({k: tf.io.RaggedFeature(tf.int64) for k in records.LIST_INTS})
  return spec


class CorpusDataSource(seqio.TFExampleDataSource):
  """The TFRecord shards of one stream of a `kmlm-jax kg build` directory.

  `prepare` (optional) is called before the files are listed; the default
  tasks use it to build the embedded sample corpus on first use.
  """

  def __init__(self, corpus_dir: str, stream: str, prepare=None):
    self.corpus_dir, self.stream, self._prepare = corpus_dir, stream, prepare
    pattern = str(Path(corpus_dir) / "corpora" / stream / f"{stream}-*.tfrecord")
    super().__init__({"train": pattern}, feature_description=feature_spec())

  def list_shards(self, split: str):
    if self._prepare is not None:
      self._prepare()
    manifest = Path(self.corpus_dir) / "manifest.json"
    if not manifest.exists():
      raise CorpusError(f"{self.corpus_dir}: not a corpus directory (no manifest.json); build "
                        "one with `kmlm-jax kg build`")
    files = super().list_shards(split)
    if not files:
      raise CorpusError(f"{self.corpus_dir}: no {self.stream} shards under corpora/{self.stream}")
    return files


# ---------------------------------------------------------------- preprocessors


def _as_str_list(values) -> list[str]:
  return [v.decode("utf-8") for v in values]


def _max_length(sequence_length, default: int) -> int:
  if sequence_length and sequence_length.get("input_ids"):
    return int(sequence_length["input_ids"])
  return default


def tokenize_and_mask_sample(task: str, vocab_path: str, default_length: int = 128):
  """Preprocessor for corpus samples: tokenize with roles, mask by stream.

  Knowledge samples (code-switched, parallel) get the knowledge rule,
  reasoning samples the reasoning rule. Samples longer than
  `sequence_length["input_ids"]` are skipped and counted.
  """

  def preprocessor(ds, sequence_length=None, **_):
    return _sample_preprocessor(task, vocab_path, _max_length(sequence_length, default_length))(ds)

  return preprocessor


def _sample_preprocessor(task: str, vocab_path: str, max_length: int):
  def fn(segs, roles, sentence_ids, kind, cycle, seed):
    vocab = load_vocab(vocab_path)
    ids, tok_roles, mentions, sentences = segments.tokenize_segments(
        vocab, _as_str_list(segs), roles.tolist(), sentence_ids.tolist())
    if len(ids) > max_length:
      _skip(task, "longer_than_sequence_length")
      return _EMPTY
    rng = _rng(seed)
    if kind.decode() == KIND_REASONING:
      inputs, loss = masking.mask_reasoning(ids, tok_roles, mentions, sentences, int(cycle),
                                            vocab, rng)
    else:
      inputs, loss = masking.mask_knowledge(ids, tok_roles, vocab, rng)
    return inputs.astype(np.int32), ids, loss.astype(np.int32)

  @seqio.map_over_dataset(num_seeds=1)
  def preprocess(ex, seed):
    inputs, targets, loss = tf.numpy_function(
        fn, [ex["segments"], ex["roles"], ex["sentence_ids"], ex["kind"], ex["cycle"], seed],
        [tf.int32, tf.int32, tf.int32], stateful=False)
    is_reasoning = tf.equal(ex["kind"], KIND_REASONING)
    s = tf.where(is_reasoning, packing.STREAM_REASONING, packing.STREAM_KNOWLEDGE)
    return {"input_ids": tf.ensure_shape(inputs, [None]),
            "targets": tf.ensure_shape(targets, [None]),
            "loss_mask": tf.ensure_shape(loss, [None]), "stream": tf.cast(s, tf.int32)}

  return preprocess


def tokenize_and_mask_text(task: str, vocab_path: str, default_length: int = 128,
                           skip_bad_lines: bool = False):
  """Preprocessor for text lines: windows of at most `sequence_length["input_ids"]`
  tokens, BERT masking."""

  def preprocessor(ds, sequence_length=None, **_):
    max_length = _max_length(sequence_length, default_length)
    return _text_preprocessor(task, vocab_path, max_length, skip_bad_lines)(ds)

  return preprocessor


def _text_preprocessor(task: str, vocab_path: str, max_length: int, skip_bad_lines: bool):
  def fn(text, path, line, seed):
    try:
      decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
      if skip_bad_lines:
        _skip(task, "non_utf8_line")
        return np.zeros((0, max_length), np.int32), np.zeros((0, max_length), np.int32), \
            np.zeros((0, max_length), np.int32), np.zeros(0, np.int32)
      raise CorpusError(f"{path.decode()}:{line}: not valid UTF-8 ({e.reason} at byte "
                        f"{e.start})") from None
    vocab = load_vocab(vocab_path)
    windows = segments.tokenize_text(vocab, decoded, max_length)
    rng = _rng(seed)
    out = np.full((3, len(windows), max_length), vocab.pad_id, np.int32)
    lengths = np.zeros(len(windows), np.int32)
    for w, ids in enumerate(windows):
      inputs, loss = masking.mask_text(ids, vocab, rng)
      n = len(ids)
      out[0, w, :n], out[1, w, :n], out[2, w, :n] = inputs, ids, loss
      out[2, w, n:] = 0
      lengths[w] = n
    return out[0], out[1], out[2], lengths

  @seqio.map_over_dataset(num_seeds=1)
  def preprocess(ex, seed):
    inputs, targets, loss, lengths = tf.numpy_function(
        fn, [ex["text"], ex["file"], ex["line"], seed], [tf.int32] * 4, stateful=False)
    matrix = lambda x: tf.ensure_shape(x, [None, max_length])
    return {"input_ids": matrix(inputs), "targets": matrix(targets), "loss_mask": matrix(loss),
            "lengths": tf.ensure_shape(lengths, [None])}

  def windows(ds):
    ds = preprocess(ds)

    def split(ex):
      n = tf.shape(ex["lengths"])[0]
      rows = tf.data.Dataset.range(tf.cast(n, tf.int64))
      return rows.map(lambda i: {
          "input_ids": ex["input_ids"][i][:ex["lengths"][i]],
          "targets": ex["targets"][i][:ex["lengths"][i]],
          "loss_mask": ex["loss_mask"][i][:ex["lengths"][i]],
          "stream": tf.constant(packing.STREAM_TEXT, tf.int32)})

    return ds.flat_map(split)

  return windows


def drop_empty(ds, **_):
  """Drops examples that the tokenizer skipped (returned with no tokens)."""
  return ds.filter(lambda ex: tf.size(ex["input_ids"]) > 0)


# ---------------------------------------------------------------- converter


class KMLMFeatureConverter(seqio.FeatureConverter):
  """Packs masked examples into encoder rows (`packing.PackSpec`).

  task_feature_lengths: {"input_ids": T}; `max_predictions` P per row.
  The model features are those of `packing.ROW_KEYS`.
  """

  # `loss_mask` and `stream` are read too; seqio wants a length for every
  # listed task feature, and they have the length of `input_ids`.
  TASK_FEATURES = {
      "input_ids": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
      "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
  }
  MODEL_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(
      dtype=tf.float32 if k == "mlm_weights" else tf.int32) for k in packing.ROW_KEYS}
  # Prix-LM tasks add `prefix_mask` (the bidirectional prefix) to their examples.
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, vocab_path: str | None = None, max_predictions: int = 32,
               pack: bool = True, stats: dict | None = None):
    super().__init__(pack=False, use_custom_packing_ops=False)
    self.vocab_path = vocab_path
    self.max_predictions = max_predictions
    self.do_pack = pack
    self.stats = stats if stats is not None else {}

  def _spec(self, length: int) -> packing.PackSpec:
    from kmlm_jax.text.vocab import default_vocab_path
    vocab = load_vocab(self.vocab_path or default_vocab_path())
    xlmr = vocab.bos_id == 0 and vocab.pad_id == 1
    return packing.PackSpec(length, self.max_predictions, vocab.pad_id,
                            vocab.pad_id + 1 if xlmr else 0, vocab.pad_id if xlmr else 0,
                            pack=self.do_pack)

  def _convert_features(self, ds, task_feature_lengths):
    spec = self._spec(task_feature_lengths["input_ids"])
    stats = self.stats

    # Examples cross into Python in padded blocks: one iterator step per
    # block instead of one per example.
    with_prefix = "prefix_mask" in ds.element_spec
    blocks = ds.map(lambda ex: {"input_ids": ex["input_ids"], "targets": ex["targets"],
                                "loss_mask": ex["loss_mask"], "stream": ex["stream"],
                                "length": tf.size(ex["input_ids"]),
                                "prefix_mask": ex.get("prefix_mask", ex["loss_mask"])})
    blocks = blocks.padded_batch(_BLOCK)

    def examples():
      for block in blocks.as_numpy_iterator():
        for i, n in enumerate(block["length"]):
          ex = {"input_ids": block["input_ids"][i, :n], "targets": block["targets"][i, :n],
                "loss_mask": block["loss_mask"][i, :n].astype(bool),
                "stream": int(block["stream"][i])}
          if with_prefix:
            ex["prefix_mask"] = block["prefix_mask"][i, :n].astype(bool)
          yield ex

    def rows():
      yield from packing.pack(examples(), spec, stats)

    signature = {k: tf.TensorSpec([spec.max_predictions if k.startswith("mlm_") else spec.length],
                                  tf.float32 if k == "mlm_weights" else tf.int32)
                 for k in packing.ROW_KEYS}
    return tf.data.Dataset.from_generator(rows, output_signature=signature)

  def get_model_feature_lengths(self, task_feature_lengths):
    t = task_feature_lengths["input_ids"]
    return {k: self.max_predictions if k.startswith("mlm_") else t for k in packing.ROW_KEYS}

  def _validate_dataset(self, ds, expected_features, expected_lengths, strict, error_label):
    # Task features have ragged lengths (packing fixes them); only model
    # features are checked, by the generator's signature.
    return ds


# ---------------------------------------------------------------- Prix-LM


def prixlm_sequences(task: str, vocab_path: str, default_length: int = 128):
  """Preprocessor for Prix-LM: `triple` and `link` samples -> causal sequences
  (`kmlm_jax.text.prixlm`). A link is used in one direction, English -> l' or
  l' -> English with equal chance (per-example seed)."""

  def preprocessor(ds, sequence_length=None, **_):
    max_length = _max_length(sequence_length, default_length)
    return _prixlm_preprocessor(task, vocab_path, max_length)(ds)

  return preprocessor


def _prixlm_preprocessor(task: str, vocab_path: str, max_length: int):
  from kmlm_jax.kg.samples import KIND_LINK
  from kmlm_jax.text import prixlm

  def fn(segs, kind, lang, seed):
    vocab = load_vocab(vocab_path)
    ids = prixlm.PrixLMIds.of(vocab)
    names = _as_str_list(segs)
    if kind.decode() == KIND_LINK:
      source, target = lang.decode().split("-", 1)
      if _rng(seed).random() < 0.5:
        names, (source, target) = names[::-1], (target, source)
      prefix = prixlm.link_prefix(vocab, ids, names[0], source, target)
      obj = names[1]
    else:
      prefix = prixlm.triple_prefix(vocab, ids, names[0], names[2],
                                      check_relation=False)
      obj = names[4]
    ex = prixlm.training_example(vocab, prefix, prixlm.object_ids(vocab, ids, obj))
    if len(ex["input_ids"]) > max_length:
      _skip(task, "longer_than_sequence_length")
      return (np.zeros(0, np.int32),) * 4
    return (ex["input_ids"], ex["targets"], ex["loss_mask"].astype(np.int32),
            ex["prefix_mask"].astype(np.int32))

  @seqio.map_over_dataset(num_seeds=1)
  def preprocess(ex, seed):
    out = tf.numpy_function(fn, [ex["segments"], ex["kind"], ex["lang"], seed], [tf.int32] * 4,
                            stateful=False)
    inputs, targets, loss, prefix = (tf.ensure_shape(x, [None]) for x in out)
    return {"input_ids": inputs, "targets": targets, "loss_mask": loss, "prefix_mask": prefix,
            "stream": tf.constant(packing.STREAM_CAUSAL, tf.int32)}

  return preprocess
