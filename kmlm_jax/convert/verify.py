"""`--verify`: run our model and transformers PyTorch on the same padded batch."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from kmlm_jax.config import ModelConfig
from kmlm_jax.convert.hf import ConversionError

# Built-in multilingual sample sentences (one per language, different lengths,
# so the batch is padded).
SAMPLE_SENTENCES = (
    "The capital of France is Paris.",
    "Die Hauptstadt von Deutschland ist Berlin, eine Stadt an der Spree.",
    "La capitale de l'Italie est Rome.",
    "El río más largo de España es el Tajo.",
    "東京は日本の首都です。",
    "北京是中华人民共和国的首都。",
    "Hà Nội là thủ đô của Việt Nam.",
    "서울은 대한민국의 수도이다.",
    "Amsterdam is de hoofdstad van Nederland, maar de regering zit in Den Haag.",
    "Москва — столица России.",
)
TOLERANCE = 1e-4


def load_tokenizer(directory: Path | None, label: str):
  """(tokenizer, LABEL) for `directory`'s tokenizer files, or (None, why there is none);
  LABEL names the model whose tokenizer it is (the checkpoint, the transformers folder)."""
  from kmlm_jax.model_checkpoint import TOKENIZER_FILES
  from kmlm_jax.text.tokenizers import load_tokenizer as load
  if directory is None or not any((directory / n).exists() for n in TOKENIZER_FILES):
    return None, f"no tokenizer in {label}"
  try:
    return load(directory), label
  except Exception as e:  # transformers raises many types; the reason goes in the report
    why = " ".join(str(e).split())[:200]
    return None, f"the tokenizer of {label} cannot be loaded ({why})"


def sample_batch(config: ModelConfig, tokenizer=None, source: str = "no tokenizer",
                 max_length: int = 48, seed: int = 0):
  """(input_ids, attention_mask, description) as int32 numpy [N, T], right-padded.

  The sample sentences tokenized by `tokenizer` (the one of model `source`) when its ids
  fit the model and, where the model's positions read the ids (`positions_read_ids`), it
  pads with the model's pad id; otherwise seeded random ids with the same padding pattern,
  and the description says so and why (with no tokenizer, `source` says why:
  `load_tokenizer`).
  """
  why = source
  if tokenizer is not None and tokenizer.pad_token_id is None:
    why = f"the tokenizer of {source} has no pad token"
  elif (tokenizer is not None and tokenizer.pad_token_id != config.pad_token_id
        and positions_read_ids(config)):
    why = (f"the tokenizer of {source} pads with id {tokenizer.pad_token_id}, the model with "
           f"{config.pad_token_id}")
  elif tokenizer is not None:
    ids, mask = _tokenized(tokenizer, max_length)
    if ids.max() < config.vocab_size:
      unk = int(((ids == tokenizer.unk_token_id) & (mask == 1)).sum())
      return ids, mask, (f"the {len(SAMPLE_SENTENCES)} sample sentences "
                         f"({SAMPLE_SENTENCES[0]!r} ... {SAMPLE_SENTENCES[-1]!r}) tokenized by the "
                         f"tokenizer of {source}: {int(mask.sum())} tokens, {unk} unknown")
    why = (f"the tokenizer of {source} gives id {ids.max()}, beyond the model's "
           f"vocab_size {config.vocab_size}")
  rng = np.random.default_rng(seed)
  lengths = rng.integers(4, max_length + 1, len(SAMPLE_SENTENCES))
  lengths[0] = max_length
  mask = (np.arange(max_length)[None] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(0, config.vocab_size, mask.shape).astype(np.int32)
  ids = np.where(ids == config.pad_token_id, (ids + 1) % config.vocab_size, ids)
  ids = np.where(mask == 1, ids, config.pad_token_id).astype(np.int32)
  return ids, mask, (f"RANDOM token ids, not sentences ({len(SAMPLE_SENTENCES)} rows, seed "
                     f"{seed}): {why}")


def positions_read_ids(config: ModelConfig) -> bool:
  """Whether transformers derives the model's positions from the ids: RoBERTa counts the
  tokens that are not `pad_token_id`, so a tokenizer padding with another id changes them;
  BERT's positions (0, 1, ...) and both frameworks' padding (the attention mask) do not
  read the pad id, so any tokenizer's padding compares."""
  return config.flavour == "xlmr"


def _tokenized(tokenizer, max_length: int):
  enc = tokenizer(list(SAMPLE_SENTENCES), padding="max_length", truncation=True,
                  max_length=max_length, return_tensors="np")
  return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def ours_outputs(config: ModelConfig, params: Mapping[str, np.ndarray], ids, mask,
                 want_logits: bool) -> np.ndarray:
  """Our encoder's MLM logits [N, T, V] or hidden states [N, T, D]; fully causal
  (`masks.causal_mask`) for a `model.attention="causal"` model, as transformers' decoder."""
  import jax
  import jax.numpy as jnp

  from kmlm_jax.model_checkpoint import build_model
  from kmlm_jax.models import masks
  model = build_model(config, params)
  causal = config.attention == "causal"

  @jax.jit
  def run(ids, mask):
    out = model(ids, attention_mask=mask, attention=masks.causal_mask(mask) if causal else None)
    return model.mlm_logits(out.hidden) if want_logits else out.hidden.astype(jnp.float32)

  return np.asarray(run(jnp.asarray(ids), jnp.asarray(mask)))


def torch_outputs(hf_dir: Path, ids, mask, want_logits: bool, causal: bool = False
                  ) -> np.ndarray:
  """transformers' model of `hf_dir`: `AutoModelForMaskedLM` (`AutoModelForCausalLM` when
  `causal`, which must be an `is_decoder` checkpoint) or the bare `AutoModel`."""
  import torch
  import transformers
  transformers.logging.set_verbosity_error()  # its load report lists our extra pooler
  transformers.utils.logging.disable_progress_bar()
  head = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForMaskedLM
  cls = head if want_logits else transformers.AutoModel
  model = cls.from_pretrained(str(hf_dir), dtype=torch.float32, local_files_only=True)
  if causal and not model.config.is_decoder:
    raise ConversionError(f"{hf_dir}: config.json is not a decoder (is_decoder false)")
  model.eval()
  extra = {"use_cache": False} if causal else {}
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(ids, dtype=torch.long),
                attention_mask=torch.as_tensor(mask, dtype=torch.long), **extra)
  return (out.logits if want_logits else out.last_hidden_state).numpy()


def verify(config: ModelConfig, params: Mapping[str, np.ndarray], hf_dir: Path,
           want_logits: bool, tokenizer=None, source: str = "no tokenizer"
           ) -> tuple[float, str, str]:
  """Returns (max abs difference over non-padding positions, what was compared, the
  input it was compared on: `sample_batch`'s description). A `model.attention="causal"`
  model is compared with transformers' decoder, both under the causal mask."""
  causal = config.attention == "causal"
  ids, mask, described = sample_batch(config, tokenizer, source)
  ours = ours_outputs(config, params, ids, mask, want_logits)
  theirs = torch_outputs(hf_dir, ids, mask, want_logits, causal)
  what = ("causal LM logits" if causal else "MLM logits") if want_logits else "last hidden states"
  what += " (causal mask)" if causal else ""
  valid = mask.astype(bool)
  return float(np.abs(ours[valid] - theirs[valid]).max()), what, described
