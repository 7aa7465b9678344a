"""Growing a model's vocabulary (Prix-LM's special tokens) and its tokenizer with it."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from kmlm_jax.config import ModelConfig


def extend_embeddings(params: Mapping, config: ModelConfig, num_new: int,
                      seed: int = 0) -> tuple[ModelConfig, dict]:
  """Appends `num_new` rows to the word embeddings (normal(initializer_range)) and
  to the MLM head's output bias (zeros) of nested `params`; the tied decoder grows
  with them."""
  rng = np.random.default_rng(seed)
  word = np.asarray(params["embeddings"]["word"])
  new_rows = rng.standard_normal((num_new, word.shape[1])) * config.initializer_range
  out = {**params, "embeddings": {**params["embeddings"],
                                  "word": np.concatenate([word, new_rows.astype(word.dtype)])}}
  if "mlm_head" in params:
    bias = np.asarray(params["mlm_head"]["bias"])
    out["mlm_head"] = {**params["mlm_head"],
                       "bias": np.concatenate([bias, np.zeros(num_new, bias.dtype)])}
  return config.replace(vocab_size=config.vocab_size + num_new), out


def extend_checkpoint(source: Path | str, target: Path | str, tokens: Sequence[str],
                      seed: int = 0, overwrite: bool = False) -> list[int]:
  """A model checkpoint with `tokens` added to its tokenizer.json and embeddings.

  Returns the new token ids. The tokenizer must be a `tokenizer.json` in the
  checkpoint's `tokenizer/` directory (XLM-R style).
  """
  import shutil
  import tempfile

  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.text.vocab import add_tokens_to_tokenizer_json
  config, params, metadata = mc.load_model_checkpoint(source)
  tok_dir = mc.tokenizer_dir_of(source)
  if tok_dir is None or not (tok_dir / "tokenizer.json").exists():
    raise ValueError(f"{source}: no tokenizer/tokenizer.json to extend")
  with tempfile.TemporaryDirectory() as tmp:
    for f in tok_dir.iterdir():
      shutil.copy2(f, Path(tmp) / f.name)
    ids = add_tokens_to_tokenizer_json(tok_dir / "tokenizer.json", list(tokens),
                                       Path(tmp) / "tokenizer.json")
    if ids[0] != config.vocab_size:
      raise ValueError(f"{source}: the tokenizer's next id is {ids[0]} but the model has "
                       f"{config.vocab_size} embedding rows; they must agree")
    config, params = extend_embeddings(params, config, len(tokens), seed)
    mc.save_model_checkpoint(target, config, params, tokenizer_dir=Path(tmp), overwrite=overwrite,
                             metadata={**metadata, "extended_with": list(tokens)})
  return ids
