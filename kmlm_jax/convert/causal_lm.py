"""Decoder checkpoints: the released Prix-LM format (`XLMRobertaForCausalLM`).

The released Prix-LM is a transformers `XLMRobertaForCausalLM` (config.json
`is_decoder: true`, so transformers' mask is fully causal) whose tokenizer
carries added tokens: `[S] [P] [O] [EOS]` and one `[lang]` per language.
Its tensors have the MaskedLM names (`hf.py` reads and writes them); this
module handles what else differs:

- the tokenizer: kmlm-jax reads a Prix-LM vocabulary from an XLM-R
  `tokenizer.json` whose added tokens follow `<mask>` with consecutive ids
  (`kmlm_jax.text.vocab`), and looks every Prix-LM token up by its string
  (`kmlm_jax.text.prixlm.PrixLMIds`). The checkpoint's ids are therefore
  kept as they are, in whatever order its tokens were added: no embedding
  row moves. A tokenizer saved without `tokenizer.json` (sentencepiece
  `sentencepiece.bpe.model` + `added_tokens.json`) gets one, written by
  transformers from those files. An added token that is neither a Prix-LM
  token nor a `[lang]` token, or a missing `[S] [P] [O] [EOS]`, is an error.
- `--verify` (`verify.verify`, by `model.attention`): transformers'
  `AutoModelForCausalLM` and our encoder, both under the causal mask.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping


from kmlm_jax import model_checkpoint as mc
from kmlm_jax.config import ModelConfig
from kmlm_jax.convert.hf import ConversionError
from kmlm_jax.text.prixlm import PRIXLM_TOKENS

# What kmlm-jax reads as a language token (`PrixLMIds.of`: every other added token).
LANGUAGE_TOKEN = re.compile(r"\[[A-Za-z][A-Za-z0-9_-]*\]")


def needs_tokenizer_json(tokenizer_dir: Path | None) -> bool:
  """True for a tokenizer folder saved without tokenizer.json (the sentencepiece form)."""
  return (tokenizer_dir is not None and not (tokenizer_dir / "tokenizer.json").exists()
          and (tokenizer_dir / "sentencepiece.bpe.model").exists())


def write_tokenizer_json(source: Path, target: Path) -> None:
  """Copies the tokenizer files of `source` into `target` and adds the `tokenizer.json`
  transformers builds from them (`sentencepiece.bpe.model`, `added_tokens.json`,
  `special_tokens_map.json`; the class from config.json or tokenizer_config.json)."""
  import transformers
  mc.copy_tokenizer_files(source, target)
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source), local_files_only=True)
  except Exception as e:  # transformers raises many types for a bad tokenizer
    raise ConversionError(f"{source}: the tokenizer (sentencepiece.bpe.model, "
                          f"added_tokens.json) cannot be loaded by transformers "
                          f"({' '.join(str(e).split())[:200]})") from None
  tokenizer.backend_tokenizer.save(str(target / "tokenizer.json"))


def prixlm_token_ids(tokenizer_dir: Path, config: ModelConfig) -> dict[str, int]:
  """{token: id} of the added tokens of `tokenizer_dir`/tokenizer.json, checked against
  kmlm-jax's Prix-LM vocabulary and the model's rows; `ConversionError` names the file."""
  from kmlm_jax.text.tokenizers import TokenizerError
  from kmlm_jax.text.vocab import read_xlmr_tokenizer_json
  path = tokenizer_dir / "tokenizer.json"
  if not path.exists():
    raise ConversionError(f"{tokenizer_dir}: no tokenizer.json (nor sentencepiece.bpe.model); "
                          "a decoder (Prix-LM) checkpoint needs its tokenizer with the added "
                          f"tokens {' '.join(PRIXLM_TOKENS)}")
  try:
    spec, added = read_xlmr_tokenizer_json(path)
  except (TokenizerError, ValueError) as e:
    raise ConversionError(f"{path}: not an XLM-R tokenizer.json, which kmlm-jax's Prix-LM "
                          f"vocabulary needs ({e})") from None
  base = len(spec["model"]["vocab"])
  ids = {token: base + i for i, token in enumerate(added)}
  stranger = [t for t in added if t not in PRIXLM_TOKENS and not LANGUAGE_TOKEN.fullmatch(t)]
  if stranger:
    raise ConversionError(
        f"{path}: added token {stranger[0]!r} (id {ids[stranger[0]]}) has no counterpart in "
        f"kmlm-jax's Prix-LM vocabulary ({' '.join(PRIXLM_TOKENS)} and one [lang] token per "
        "language)")
  missing = [t for t in PRIXLM_TOKENS if t not in ids]
  if missing:
    raise ConversionError(f"{path}: the decoder checkpoint's tokenizer lacks the Prix-LM "
                          f"token(s) {' '.join(missing)}; kmlm-jax reads a decoder checkpoint "
                          f"as Prix-LM, which needs {' '.join(PRIXLM_TOKENS)}")
  if base + len(added) > config.vocab_size:
    raise ConversionError(f"{path}: the tokenizer has {base + len(added)} ids, more than the "
                          f"model's vocab_size {config.vocab_size}")
  return ids


def token_line(ids: Mapping[str, int]) -> str:
  """The report line of the Prix-LM tokens and their ids."""
  special = " ".join(f"{t}={ids[t]}" for t in PRIXLM_TOKENS if t in ids)
  langs = " ".join(f"{t}={i}" for t, i in ids.items() if t not in PRIXLM_TOKENS)
  return (f"Prix-LM tokens (ids as in the checkpoint, looked up by string): {special}; "
          f"languages: {langs or 'none'}")
