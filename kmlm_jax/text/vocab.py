"""Token vocabularies that also report character offsets, and their seqio wrapper.

Two implementations of one small interface (`TokenVocab`):

- `XLMRSentencePiece`: the XLM-R vocabulary run by the sentencepiece C++
  library with fairseq's id mapping (`<s>`=0, `<pad>`=1, `</s>`=2,
  `<unk>`=3, sentencepiece piece i -> i + 1, `<mask>` last). Built from a
  sentencepiece `.model` or, since the real XLM-R tokenizer installs here as
  a Hugging Face `tokenizer.json` (a Unigram model converted from that very
  `.model`), by converting the JSON back into a sentencepiece model. It does
  not go through `transformers`, so the tests can compare the two.
- `HFVocab`: any `transformers` fast tokenizer (mBERT WordPiece from
  `vocab.txt`, or a Hugging Face directory).

`KMLMVocabulary` adapts either to `seqio.Vocabulary` (ids without special
tokens, like seqio's own vocabularies; `pad_id` is the model's).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import itertools
import json
from pathlib import Path
from typing import Protocol

import numpy as np

from kmlm_jax.text.tokenizers import TokenizerError


class TokenVocab(Protocol):
  vocab_size: int
  bos_id: int  # <s> / [CLS]
  eos_id: int  # </s> / [SEP]
  pad_id: int
  unk_id: int
  mask_id: int
  mask_token: str
  first_regular_id: int  # random replacements in MLM are drawn from [first_regular_id, mask_id)

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[int], list[int]]:
    """(ids, char begins, char ends) of `text`, no special tokens."""

  def decode(self, ids) -> str: ...


# --------------------------------------------------------------- XLM-R


def read_xlmr_tokenizer_json(path: Path | str) -> tuple[dict, tuple[str, ...]]:
  """(the parsed JSON, the tokens added after `<mask>`) of an XLM-R `tokenizer.json`.

  Raises `TokenizerError` for a file that is not a tokenizer.json at all and a
  plain `ValueError` for another kind of tokenizer.json (e.g. WordPiece).
  """
  try:
    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    model = spec["model"]
    vocab = model["vocab"]
    base = len(vocab)
    added = sorted((t["id"], t["content"]) for t in spec.get("added_tokens", [])
                   if t["id"] >= base)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise TokenizerError(f"{path}: not a tokenizer.json ({type(e).__name__}: {e})") from None
  if [i for i, _ in added] != list(range(base, base + len(added))):
    raise ValueError(f"{path}: added tokens beyond the vocabulary must have consecutive ids "
                     f"from {base}")
  if model.get("type") != "Unigram":
    raise ValueError(f"{path}: model type {model.get('type')!r}; only an XLM-R style Unigram "
                     "tokenizer.json can become a sentencepiece model")
  if [p for p, _ in vocab[:4]] != ["<s>", "<pad>", "</s>", "<unk>"] or vocab[-1][0] != "<mask>":
    raise ValueError(f"{path}: not in fairseq XLM-R order (<s> <pad> </s> <unk> ... <mask>)")
  return spec, tuple(t for _, t in added)


def is_xlmr_tokenizer_json(path: Path | str) -> bool:
  """Whether `path` is an XLM-R style tokenizer.json (Unigram, fairseq order, `<mask>` last,
  added tokens after it): the tokenizer, not the model's flavour, says which transformers
  tokenizer class reads it. A file that is not a tokenizer.json at all raises
  `TokenizerError`."""
  try:
    read_xlmr_tokenizer_json(path)
  except TokenizerError:
    raise
  except ValueError:
    return False
  return True


def sentencepiece_model_from_tokenizer_json(path: Path | str, spec: dict | None = None) -> bytes:
  """A serialized sentencepiece ModelProto equivalent to an XLM-R `tokenizer.json` (`spec`:
  the file already parsed by `read_xlmr_tokenizer_json`).

  The JSON's Unigram vocabulary is in fairseq order; sentencepiece's is
  `<unk> <s> </s>` then the pieces, so JSON entry i (4 <= i < V - 1) is
  sentencepiece piece i - 1. The normaliser is the JSON's precompiled
  charsmap (NFKC plus XLM-R's own rules) with sentencepiece's whitespace
  handling (dummy prefix, extra whitespace removed), which is what the JSON's
  `Replace(' {2,}', ' ')` + `Metaspace` encode.
  """
  from sentencepiece import sentencepiece_model_pb2 as pb
  spec = spec or read_xlmr_tokenizer_json(path)[0]
  vocab = spec["model"]["vocab"]
  charsmap = b""
  for norm in spec["normalizer"].get("normalizers", [spec["normalizer"]]):
    if norm.get("type") == "Precompiled":
      charsmap = base64.b64decode(norm["precompiled_charsmap"])
  proto = pb.ModelProto(  # <unk> <s> </s> and the pieces
      trainer_spec=pb.TrainerSpec(model_type=pb.TrainerSpec.UNIGRAM, vocab_size=len(vocab) - 2,
                                  unk_id=0, bos_id=1, eos_id=2, pad_id=-1),
      normalizer_spec=pb.NormalizerSpec(name="xlmr_precompiled", precompiled_charsmap=charsmap,
                                        add_dummy_prefix=True, remove_extra_whitespaces=True,
                                        escape_whitespaces=True))
  for piece, kind in (("<unk>", pb.ModelProto.SentencePiece.UNKNOWN),
                      ("<s>", pb.ModelProto.SentencePiece.CONTROL),
                      ("</s>", pb.ModelProto.SentencePiece.CONTROL)):
    proto.pieces.add(piece=piece, score=0.0, type=kind)
  for piece, score in vocab[4:-1]:
    proto.pieces.add(piece=piece, score=score, type=pb.ModelProto.SentencePiece.NORMAL)
  return proto.SerializeToString()


@dataclasses.dataclass
class XLMRSentencePiece:
  """XLM-R ids from sentencepiece (see module docstring)."""

  model_proto: bytes
  source: str = ""
  # Tokens appended after `<mask>` (e.g. Prix-LM's [S] [P] [O] [EOS] [en]);
  # never produced from text, looked up with `token_id`.
  added_tokens: tuple[str, ...] = ()
  bos_id: int = 0
  pad_id: int = 1
  eos_id: int = 2
  unk_id: int = 3
  first_regular_id: int = 4
  mask_token: str = "<mask>"

  def __post_init__(self):
    import sentencepiece as spm
    self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
    self.mask_id = self._sp.get_piece_size() + 1  # after <pad>
    self.vocab_size = self.mask_id + 1 + len(self.added_tokens)

  def token_id(self, token: str) -> int:
    """Id of an added token."""
    try:
      return self.mask_id + 1 + self.added_tokens.index(token)
    except ValueError:
      raise KeyError(f"{token!r} is not an added token of {self.source} "
                     f"(it has {list(self.added_tokens)})") from None

  @classmethod
  def from_file(cls, path: Path | str) -> "XLMRSentencePiece":
    """From a `tokenizer.json` (converted; added tokens after `<mask>` kept) or a
    sentencepiece `.model`."""
    path = Path(path)
    if path.suffix == ".json":
      spec, added = read_xlmr_tokenizer_json(path)
      return cls(sentencepiece_model_from_tokenizer_json(path, spec), str(path), added)
    return cls(path.read_bytes(), str(path))

  def encode_with_offsets(self, text: str):
    # For a str input, sentencepiece reports offsets in characters of `text`.
    # The serialized proto parsed by protobuf is ~2x faster to walk than the
    # immutable proto's per-piece accessors; its offsets are in UTF-8 bytes.
    from sentencepiece import sentencepiece_pb2
    pieces = sentencepiece_pb2.SentencePieceText.FromString(
        self._sp.EncodeAsSerializedProto(text)).pieces
    ids = [p.id + 1 if p.id != 0 else self.unk_id for p in pieces]
    begins, ends = [p.begin for p in pieces], [p.end for p in pieces]
    if not text.isascii():
      begins, ends = _bytes_to_chars(text, begins, ends)
    return ids, begins, ends

  def encode(self, text: str) -> list[int]:
    return [i + 1 if i != 0 else self.unk_id for i in self._sp.encode(text)]

  def decode(self, ids) -> str:
    specials = {self.bos_id, self.pad_id, self.eos_id}
    return self._sp.decode([int(i) - 1 if i != self.unk_id else 0 for i in ids
                            if int(i) not in specials and int(i) < self.mask_id])


def _bytes_to_chars(text: str, begins: list[int], ends: list[int]) -> tuple[list[int], list[int]]:
  """UTF-8 byte offsets of `text` as character offsets (begins inclusive, ends exclusive)."""
  points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
  sizes = 1 + (points >= 0x80).astype(np.int64) + (points >= 0x800) + (points >= 0x10000)
  starts = np.cumsum(sizes) - sizes  # byte offset where each character starts
  return ((np.searchsorted(starts, begins, side="right") - 1).tolist(),
          np.searchsorted(starts, ends, side="left").tolist())


def add_tokens_to_tokenizer_json(source: Path | str, tokens, target: Path | str) -> list[int]:
  """Writes `source` with `tokens` appended as special added tokens; returns their ids.

  transformers matches added tokens before the model, so they never split
  text; this project's vocabulary reads them back as `added_tokens`.
  """
  spec = json.loads(Path(source).read_text(encoding="utf-8"))
  existing = {t["content"] for t in spec.get("added_tokens", [])}
  clash = [t for t in tokens if t in existing]
  if clash:
    raise ValueError(f"{source}: already has the tokens {clash}")
  next_id = max([len(spec["model"]["vocab"]) - 1] +
                [t["id"] for t in spec.get("added_tokens", [])]) + 1
  ids = list(range(next_id, next_id + len(tokens)))
  for i, token in zip(ids, tokens):
    spec.setdefault("added_tokens", []).append(
        {"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True})
  Path(target).parent.mkdir(parents=True, exist_ok=True)
  Path(target).write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
  return ids


# --------------------------------------------------------------- transformers


@dataclasses.dataclass
class HFVocab:
  """A transformers fast tokenizer (e.g. mBERT WordPiece) behind `TokenVocab`."""

  tokenizer: object
  source: str = ""

  def __post_init__(self):
    t = self.tokenizer
    if not getattr(t, "is_fast", False):
      raise ValueError(f"{self.source}: a fast tokenizer is needed for character offsets")
    self.vocab_size = len(t)
    self.bos_id = t.cls_token_id if t.cls_token_id is not None else t.bos_token_id
    self.eos_id = t.sep_token_id if t.sep_token_id is not None else t.eos_token_id
    self.pad_id, self.unk_id, self.mask_id = t.pad_token_id, t.unk_token_id, t.mask_token_id
    self.mask_token = t.mask_token
    special = set(t.all_special_ids)  # first regular id: the first after the leading specials
    self.first_regular_id = next(i for i in itertools.count() if i not in special)

  def encode_with_offsets(self, text: str):
    enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    return list(enc["input_ids"]), [b for b, _ in offsets], [e for _, e in offsets]

  def encode(self, text: str) -> list[int]:
    return self.tokenizer(text, add_special_tokens=False)["input_ids"]

  def decode(self, ids) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


@functools.cache
def load_vocab(path: str) -> TokenVocab:
  """An XLM-R `tokenizer.json` / sentencepiece `.model` -> XLMRSentencePiece;
  anything else `load_tokenizer` reads (vocab.txt, HF directory) -> HFVocab."""
  from kmlm_jax.text.tokenizers import load_tokenizer
  p = Path(path)
  if p.suffix in (".json", ".model") and p.is_file():
    try:
      return XLMRSentencePiece.from_file(p)
    except ValueError as e:  # not an XLM-R tokenizer.json: try transformers
      if p.suffix == ".model" or isinstance(e, TokenizerError):
        raise
  try:
    return HFVocab(load_tokenizer(p), str(p))
  except ValueError as e:
    raise TokenizerError(str(e)) from None


def tokenizer_summary(path: str) -> tuple[int, tuple[str, ...]]:
  """(vocabulary size, tokens added after `<mask>`) of the tokenizer `load_vocab(path)`
  loads, read from the JSON alone for an XLM-R tokenizer.json (no sentencepiece model is
  built: a run's checks stay fast)."""
  p = Path(path)
  if p.suffix == ".json" and p.is_file():
    try:
      spec, added = read_xlmr_tokenizer_json(p)
      return len(spec["model"]["vocab"]) + len(added), added
    except ValueError as e:  # another kind of tokenizer.json: transformers reads it
      if isinstance(e, TokenizerError):
        raise
  vocab = load_vocab(str(path))
  return vocab.vocab_size, tuple(getattr(vocab, "added_tokens", ()))


def default_vocab_path() -> str:
  """The real XLM-R tokenizer.json installed by the set-up."""
  from kmlm_jax.assets import real_xlmr_tokenizer_json
  return str(real_xlmr_tokenizer_json())


# --------------------------------------------------------------- seqio


def seqio_vocabulary(path: str | None = None):
  """A `seqio.Vocabulary` over `load_vocab(path)` (default: the real XLM-R)."""
  import seqio
  import tensorflow as tf

  class KMLMVocabulary(seqio.Vocabulary):
    """seqio view of a `TokenVocab`; ids carry no special tokens."""

    def __init__(self, vocab_path: str):
      self.vocab_path = vocab_path
      self.vocab = load_vocab(vocab_path)
      super().__init__(extra_ids=0)

    eos_id = property(lambda self: self.vocab.eos_id)
    pad_id = property(lambda self: self.vocab.pad_id)
    unk_id = property(lambda self: self.vocab.unk_id)
    _base_vocab_size = property(lambda self: self.vocab.vocab_size)

    def _encode(self, s):
      return self.vocab.encode(s)

    def _decode(self, ids):
      return self.vocab.decode(ids)

    def _encode_tf(self, s):
      encode = lambda x: np.asarray(self.vocab.encode(bytes(x.item()).decode("utf-8")), np.int32)
      out = tf.numpy_function(encode, [s], tf.int32, stateful=False)
      return tf.ensure_shape(out, [None])

    def _decode_tf(self, ids):
      decode = lambda x: np.asarray(self.vocab.decode(x.tolist()).encode("utf-8"), object)
      return tf.numpy_function(decode, [ids], tf.string, stateful=False)

    def __eq__(self, other):
      return isinstance(other, KMLMVocabulary) and other.vocab_path == self.vocab_path

    def __hash__(self):
      return hash(self.vocab_path)

  return KMLMVocabulary(path or default_vocab_path())
