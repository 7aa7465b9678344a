"""The Flax encoder against transformers PyTorch, and its own invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx

from kmlm_jax.config import PRESETS, preset
from kmlm_jax.convert import hf
from kmlm_jax.model_checkpoint import abstract_model, build_model
from kmlm_jax.models.masks import default_positions
from tests import hf_models


def _ours(hf_dir):
  loaded = hf.load_hf_params(hf_dir)
  return loaded.config, build_model(loaded.config, loaded.params)


@pytest.mark.parametrize("dims", ["tiny", "base2"])
@pytest.mark.parametrize("flavour", ["xlmr", "bert"])
def test_parity_with_transformers(flavour, dims, hf_dirs):
  torch_model = hf_models.random_masked_lm(flavour, dims)
  config, model = _ours(hf_dirs(flavour, dims))
  ids, mask = hf_models.padded_batch(config.vocab_size, config.pad_token_id)
  ref_hidden, ref_logits = hf_models.torch_forward(torch_model, ids, mask)

  out = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  logits = np.asarray(model.mlm_logits(out.hidden))
  valid = mask.astype(bool)
  assert np.abs(np.asarray(out.hidden)[valid] - ref_hidden[valid]).max() < 1e-4
  assert np.abs(logits[valid] - ref_logits[valid]).max() < 1e-4
  # Same predictions, not just small numbers.
  assert (logits[valid].argmax(-1) == ref_logits[valid].argmax(-1)).all()


@pytest.mark.parametrize("flavour", ["xlmr", "bert"])
def test_gathered_head_equals_full_logits(flavour, hf_dirs):
  config, model = _ours(hf_dirs(flavour, "tiny"))
  ids, mask = hf_models.padded_batch(config.vocab_size, config.pad_token_id)
  hidden = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).hidden
  full = np.asarray(model.mlm_logits(hidden))
  positions = np.array([[0, 5, 23], [1, 16, 2], [8, 0, 3], [2, 1, 0]], np.int32)
  gathered = np.asarray(model.mlm_logits(hidden, jnp.asarray(positions)))
  assert gathered.shape == (4, 3, config.vocab_size)
  np.testing.assert_allclose(gathered, full[np.arange(4)[:, None], positions], atol=1e-6)


@pytest.mark.parametrize("flavour", ["xlmr", "bert"])
def test_packed_rows_equal_separate_rows(flavour, hf_dirs):
  """Two examples packed in one row give the hidden states they give alone."""
  config, model = _ours(hf_dirs(flavour, "tiny"))
  ids, mask = hf_models.padded_batch(config.vocab_size, config.pad_token_id,
                                     lengths=(9, 7), length=16)
  alone = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).hidden)
  packed = np.full((1, 16), config.pad_token_id, np.int32)
  packed[0, :9], packed[0, 9:16] = ids[0, :9], ids[1, :7]
  segments = np.array([[1] * 9 + [2] * 7], np.int32)
  out = np.asarray(model(jnp.asarray(packed), segment_ids=jnp.asarray(segments)).hidden)
  np.testing.assert_allclose(out[0, :9], alone[0, :9], atol=1e-5)
  np.testing.assert_allclose(out[0, 9:], alone[1, :7], atol=1e-5)


def test_default_positions_follow_transformers_rules():
  from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaEmbeddings
  import torch
  ids, mask = hf_models.padded_batch(100, 1)
  ref = XLMRobertaEmbeddings.create_position_ids_from_input_ids(torch.as_tensor(ids), 1)
  ours = default_positions(jnp.asarray(mask), offset=2, pad_position=1)
  np.testing.assert_array_equal(np.asarray(ours), ref.numpy())
  seg = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0]])
  np.testing.assert_array_equal(np.asarray(default_positions(seg, 2, 1)),
                                [[2, 3, 4, 2, 3, 2, 1, 1]])
  np.testing.assert_array_equal(np.asarray(default_positions(seg, 0, 0)),
                                [[0, 1, 2, 0, 1, 0, 0, 0]])


def test_bf16_compute_close_to_fp32(hf_dirs):
  loaded = hf.load_hf_params(hf_dirs("xlmr", "tiny"))
  fp32 = build_model(loaded.config, loaded.params)
  bf16 = build_model(loaded.config.replace(dtype="bfloat16"), loaded.params)
  ids, mask = hf_models.padded_batch(loaded.config.vocab_size, 1)
  a = fp32(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).hidden
  b = bf16(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).hidden
  assert b.dtype == jnp.bfloat16
  assert jax.tree.leaves(bf16)[0].dtype == jnp.float32  # parameters stay fp32
  err = np.abs(np.asarray(a) - np.asarray(b, np.float32))[mask.astype(bool)]
  assert 0 < err.max() < 0.1


def _dot_operand_dtypes(jaxpr) -> set:
  """Dtypes of every dot_general operand, sub-jaxprs (scan, remat) included."""
  found = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.update(str(v.aval.dtype) for v in eqn.invars)
    for sub in jax.core.jaxprs_in_params(eqn.params):
      found |= _dot_operand_dtypes(sub)
  return found


def test_bf16_layers_run_every_matmul_in_bf16(hf_dirs):
  # A fp32 bias added to a bf16 matmul output promotes the following matmuls
  # (attention, output projection, MLP out) to fp32; none may be left.
  loaded = hf.load_hf_params(hf_dirs("xlmr", "tiny"))
  bf16 = build_model(loaded.config.replace(dtype="bfloat16"), loaded.params)
  ids, mask = hf_models.padded_batch(loaded.config.vocab_size, 1)
  jaxpr = jax.make_jaxpr(lambda i, m: bf16(i, attention_mask=m).hidden)(
      jnp.asarray(ids), jnp.asarray(mask))
  assert _dot_operand_dtypes(jaxpr.jaxpr) == {"bfloat16"}


@pytest.mark.slow
def test_dropout_is_deterministic_per_key(hf_dirs):
  _, model = _ours(hf_dirs("xlmr", "tiny"))
  ids, mask = hf_models.padded_batch(1000, 1)
  run = lambda key: np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                                     dropout_rng=key).hidden)
  k = jax.random.key(3)
  np.testing.assert_array_equal(run(k), run(k))
  assert np.abs(run(k) - run(jax.random.key(4))).max() > 1e-3


@pytest.mark.parametrize("name,hf_name", [("xlmr-base", "xlmr"), ("xlmr-large", "xlmr"),
                                          ("mbert-base", "bert")])
def test_presets_match_public_checkpoint_sizes(name, hf_name):
  """Parameter counts of our presets equal transformers' models of the public configs."""
  import torch
  config = preset(name)
  hf_cfg = hf.hf_config_from_model_config(config)
  cls = {"xlmr": transformers.XLMRobertaConfig, "bert": transformers.BertConfig}[hf_name]
  with torch.device("meta"):
    ref = transformers.AutoModelForMaskedLM.from_config(cls(**hf_cfg))
  ref_count = sum(p.numel() for p in ref.parameters())
  if config.use_pooler:  # BertForMaskedLM has no pooler; the public checkpoint does
    ref_count += config.hidden_size ** 2 + config.hidden_size
  ours = sum(np.prod(v.shape) for v in jax.tree.leaves(abstract_model(config)))
  assert ours == config.num_params() == ref_count
  published = {"xlmr-base": 278_295_186, "xlmr-large": 560_142_482}
  if name in published:  # transformers' documented XLMRobertaForMaskedLM sizes
    assert ours == published[name]


def test_tiny_presets_build():
  for name in ("tiny", "tiny-bert"):
    assert abstract_model(PRESETS[name]).embeddings.word.shape[0] == 1024


@pytest.mark.slow
def test_unrolled_layers_equal_scanned(hf_dirs):
  loaded = hf.load_hf_params(hf_dirs("bert", "tiny"))
  ids, mask = hf_models.padded_batch(loaded.config.vocab_size, 1)
  out = {}
  for scan in (True, False):
    model = build_model(loaded.config.replace(scan_layers=scan), loaded.params)
    loss = lambda m: m(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).hidden.sum()
    out[scan] = nnx.value_and_grad(loss)(model)
    lowered = nnx.jit(lambda m, i: m(i, attention_mask=jnp.asarray(mask)).hidden).lower(
        model, jnp.asarray(ids)).as_text()
    assert ("stablehlo.while" in lowered) == scan
  np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(out[True][1]), jax.tree.leaves(out[False][1])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
