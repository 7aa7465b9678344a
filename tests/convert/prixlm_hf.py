"""A released-format Prix-LM built with transformers: a random `XLMRobertaForCausalLM`
(`is_decoder`) with the Prix-LM added tokens in its tokenizer (the real XLM-R
tokenizer.json trimmed to the texts below, tokens added by transformers)."""

import json
from pathlib import Path

import numpy as np
import torch
import transformers

from kmlm_jax.assets import real_xlmr_tokenizer_json
from kmlm_jax.convert.verify import SAMPLE_SENTENCES
from kmlm_jax.text.trim import trim_tokenizer_json
from kmlm_jax.text.vocab import sentencepiece_model_from_tokenizer_json

# Not kmlm-jax's order ([S] [P] [O] [EOS] then languages): ids must follow the strings.
ADDED = ("[en]", "[S]", "[P]", "[O]", "[ja]", "[EOS]")
ENTITIES = ("Paris", "Paris Hilton", "Berlin", "Bern", "London", "Lyon", "Tokyo", "Kyoto")
# (head, relation, tail) test queries and the other known tails of each (head, relation).
QUERIES = (("France", "capital", "Paris"), ("Germany", "capital", "Berlin"),
           ("Japan", "located in", "Tokyo"))
OTHER_TAILS = {("Japan", "located in"): ("Kyoto",)}
TEXTS = ENTITIES + tuple(q[0] for q in QUERIES) + tuple(q[1] for q in QUERIES) + SAMPLE_SENTENCES


def tokenizer(directory: Path) -> transformers.PreTrainedTokenizerBase:
  """The trimmed XLM-R tokenizer with `ADDED` as special tokens (transformers adds them)."""
  directory.mkdir(parents=True, exist_ok=True)
  trim_tokenizer_json(real_xlmr_tokenizer_json(), TEXTS, directory / "trimmed.json")
  tok = transformers.XLMRobertaTokenizerFast(tokenizer_file=str(directory / "trimmed.json"))
  tok.add_special_tokens({"additional_special_tokens": list(ADDED)})
  return tok


def causal_lm(vocab_size: int, seed: int = 0) -> transformers.XLMRobertaForCausalLM:
  """A random decoder with every parameter perturbed (biases and LayerNorms non-trivial)."""
  torch.manual_seed(seed)
  config = transformers.XLMRobertaConfig(
      vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=128, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
      layer_norm_eps=1e-5, is_decoder=True)
  model = transformers.XLMRobertaForCausalLM(config)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  return model.eval()


def save(directory: Path, slow_tokenizer: bool = False) -> Path:
  """Writes the model and its tokenizer to `directory`: tokenizer.json (what
  `save_pretrained` writes), or the sentencepiece form (sentencepiece.bpe.model,
  added_tokens.json, special_tokens_map.json) with no tokenizer.json."""
  tok = tokenizer(directory.parent / (directory.name + "-tok"))
  causal_lm(len(tok)).save_pretrained(directory)
  if not slow_tokenizer:
    tok.save_pretrained(directory)
    return directory
  trimmed = directory.parent / (directory.name + "-tok") / "trimmed.json"
  (directory / "sentencepiece.bpe.model").write_bytes(
      sentencepiece_model_from_tokenizer_json(trimmed))
  base = len(json.loads(trimmed.read_text(encoding="utf-8"))["model"]["vocab"])
  (directory / "added_tokens.json").write_text(
      json.dumps({t: base + i for i, t in enumerate(ADDED)}))
  specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "sep_token": "</s>", "pad_token": "<pad>", "cls_token": "<s>",
              "mask_token": "<mask>", "additional_special_tokens": list(ADDED)}
  (directory / "special_tokens_map.json").write_text(json.dumps(specials))
  return directory


def nll(model, ids) -> np.ndarray:
  """[T-1] -log P(ids[t+1] | ids[:t+1]) of one sequence, as the released decode.py runs
  it: `model.roberta(input_ids)` with no attention mask, then `model.lm_head`."""
  with torch.no_grad():
    hidden = model.roberta(torch.as_tensor([list(ids)], dtype=torch.long))[0]
    logp = torch.log_softmax(model.lm_head(hidden[0]), dim=-1).numpy()
  return -logp[np.arange(len(ids) - 1), np.asarray(ids[1:])]
