"""Random transformers PyTorch models used as references in tests."""

import numpy as np
import torch
import transformers

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

# "tiny" and "base2": two layers with the exact xlmr-base / mbert-base widths.
DIMS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, vocab_size=1000),
    "base2": dict(hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                  intermediate_size=3072, vocab_size=5000),
}


def hf_config(flavour: str, dims: str):
  d = DIMS[dims]
  if flavour == "xlmr":
    return transformers.XLMRobertaConfig(**d, max_position_embeddings=130, type_vocab_size=1,
                                         pad_token_id=1, layer_norm_eps=1e-5)
  return transformers.BertConfig(**d, max_position_embeddings=128, type_vocab_size=2,
                                 pad_token_id=0, layer_norm_eps=1e-12)


def random_masked_lm(flavour: str, dims: str, seed: int = 0):
  """A MaskedLM with every parameter perturbed (biases and LayerNorms non-trivial)."""
  torch.manual_seed(seed)
  cls = transformers.XLMRobertaForMaskedLM if flavour == "xlmr" else transformers.BertForMaskedLM
  model = cls(hf_config(flavour, dims))
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  return model.eval()


def padded_batch(vocab_size: int, pad_id: int, lengths=(24, 17, 9, 3), length: int = 24,
                 seed: int = 0):
  """Right-padded int32 ids and attention mask [len(lengths), length]."""
  rng = np.random.default_rng(seed)
  mask = (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
  ids = rng.integers(5, vocab_size, mask.shape)
  return np.where(mask == 1, ids, pad_id).astype(np.int32), mask


def torch_forward(model, ids, mask):
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(ids, dtype=torch.long),
                attention_mask=torch.as_tensor(mask, dtype=torch.long),
                output_hidden_states=True)
  return out.hidden_states[-1].numpy(), out.logits.numpy()
