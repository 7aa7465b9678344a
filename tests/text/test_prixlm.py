"""Prix-LM: extended vocabulary, sequence formats, training loss = decoding scores, export."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx

from kmlm_jax.assets import real_xlmr_tokenizer_json
from kmlm_jax.config import preset
from kmlm_jax.decoding.reference import exhaustive_scores
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.data import masking, packing
from kmlm_jax.text import prixlm
from kmlm_jax.text.vocab import (XLMRSentencePiece, add_tokens_to_tokenizer_json, load_vocab,
                                 tokenizer_summary)
from kmlm_jax.training import losses
from kmlm_jax.training.pretraining import forward

LANGS = ("en", "fr", "ja")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
  ids = add_tokens_to_tokenizer_json(real_xlmr_tokenizer_json(), prixlm.added_tokens(LANGS), path)
  assert ids == list(range(250002, 250002 + 7))
  return XLMRSentencePiece.from_file(path)


def test_extended_vocabulary_matches_transformers(vocab):
  hf = transformers.XLMRobertaTokenizerFast(tokenizer_file=vocab.source)
  assert vocab.vocab_size == len(hf) == 250009 and vocab.mask_id == 250001
  for token in prixlm.added_tokens(LANGS):
    assert vocab.token_id(token) == hf.convert_tokens_to_ids(token)
  # Added tokens never change how ordinary text is split.
  text = "Paris [S] est la capitale de la France."
  assert vocab.encode("Paris est") == hf("Paris est", add_special_tokens=False)["input_ids"]
  assert vocab.token_id("[S]") in hf(text, add_special_tokens=False)["input_ids"]


def test_summary_reads_the_size_and_added_tokens_without_loading(vocab):
  """`tokenizer_summary` (the run's checks) says what the loaded vocabulary says."""
  assert tokenizer_summary(vocab.source) == (vocab.vocab_size, vocab.added_tokens)
  prixlm.check_vocabulary(vocab.added_tokens, "t", LANGS)
  with pytest.raises(prixlm.PrixLMVocabError, match=r"t: not a Prix-LM vocabulary.*\[de\]"):
    prixlm.check_vocabulary(vocab.added_tokens, "t", ("en", "de"))
  size, added = tokenizer_summary(str(real_xlmr_tokenizer_json()))
  assert (size, added) == (250002, ())
  with pytest.raises(prixlm.PrixLMVocabError, match=r"lacks the added tokens \[S\] \[P\]"):
    prixlm.check_vocabulary(added, "t")


def test_sequence_formats(vocab):
  ids = prixlm.PrixLMIds.of(vocab)
  prefix = prixlm.triple_prefix(vocab, ids, "France", "capital")
  tokens = [vocab.bos_id, ids.subject] + vocab.encode("France") + [2, 2, ids.predicate] + \
      vocab.encode("capital") + [2, 2, ids.object]
  assert prefix == tokens
  link = prixlm.link_prefix(vocab, ids, "France", "en", "ja")
  assert link[-6:] == [ids.predicate, ids.languages["en"], ids.languages["ja"], 2, 2, ids.object]
  obj = prixlm.object_ids(vocab, ids, "Paris")
  ex = prixlm.training_example(vocab, prefix, obj)
  n, p = len(ex["input_ids"]), len(prefix)
  assert ex["input_ids"].tolist() == prefix + obj + [2]
  assert ex["prefix_mask"].tolist() == [True] * p + [False] * (n - p)
  # [O] predicts the first object token, the last object token predicts [EOS].
  where = np.flatnonzero(ex["loss_mask"])
  assert where.tolist() == list(range(p - 1, p - 1 + len(obj)))
  assert ex["targets"][where].tolist() == obj
  with pytest.raises(ValueError, match="no language token for 'de'"):
    prixlm.link_prefix(vocab, ids, "France", "en", "de")
  # A query relation the tokenizer cannot represent is an error; training keeps it.
  for relation in ("\U0001F9FF", ""):
    with pytest.raises(prixlm.UnknownRelationError, match="unknown to the tokenizer"):
      prixlm.triple_prefix(vocab, ids, "France", relation)
  assert vocab.unk_id in prixlm.triple_prefix(vocab, ids, "France", "\U0001F9FF",
                                              check_relation=False)
  with pytest.raises(ValueError, match="not a Prix-LM vocabulary"):
    prixlm.PrixLMIds.of(load_vocab(str(real_xlmr_tokenizer_json())))


@pytest.mark.slow
def test_training_loss_equals_decoding_scores():
  """The packed training loss of a Prix-LM example is the NLL beam search assigns it."""
  rng = np.random.default_rng(0)
  config = preset("tiny", vocab_size=300, max_position_embeddings=130, dropout_rate=0.0,
                  attention_dropout_rate=0.0)
  model = Encoder(config, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)

  class V:
    bos_id, pad_id, eos_id = 0, 1, 2

  tokens, lengths, prefix_lens, expected, reference = [], [], [], [], []
  for i in range(6):
    prefix = [0] + rng.integers(5, 290, int(rng.integers(4, 12))).tolist() + [297]
    name = rng.integers(5, 290, int(rng.integers(1, 5))).tolist()
    reference.append(prixlm.training_example(V, prefix, name + [299]))
    tokens += reference[-1]["input_ids"].tolist()
    lengths.append(len(reference[-1]["input_ids"]))
    prefix_lens.append(len(prefix))
    expected.append(float(exhaustive_scores(model, prefix, [name], 299)[0]))
  n, rules = len(tokens), np.full(6, masking.RULE_CAUSAL)
  m = masking.mask_block(np.asarray(tokens), np.zeros(n, np.int8), np.full(n, -1), np.full(n, -1),
                         lengths, rules, prefix_lens, np.zeros(6, np.uint64),
                         masking.SpecialIds(bos=0, eos=2, pad=1, mask=296, first_regular=4))
  # The vectorized causal rule gives what `prixlm.training_example` gives.
  ends = np.cumsum(lengths)
  for ref, a, b in zip(reference, ends - lengths, ends):
    np.testing.assert_array_equal(m.loss[a:b], ref["loss_mask"])
    np.testing.assert_array_equal(m.prefix[a:b], ref["prefix_mask"])
    np.testing.assert_array_equal(m.targets[a:b][ref["loss_mask"]], ref["targets"][ref["loss_mask"]])
  rows, _ = packing.pack_block(m.inputs, m.targets, m.loss, m.prefix, lengths, rules,
                               packing.PackSpec(128, 32, 1))
  rows = [dict(zip(rows, r)) for r in zip(*rows.values())]
  batch = {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in packing.ROW_KEYS}
  nll, _ = forward(nnx.merge(graphdef, params), batch, None)
  nll = np.asarray(nll) * np.asarray(batch["mlm_weights"])
  seg = np.take_along_axis(np.asarray(batch["segment_ids"]), np.asarray(batch["mlm_positions"]), 1)
  got, k = [], 0
  for r in range(len(rows)):
    for s in range(1, int(np.asarray(batch["segment_ids"])[r].max()) + 1):
      got.append(float(nll[r][(seg[r] == s) & (np.asarray(batch["mlm_weights"])[r] > 0)].sum()))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert losses.TERM_NAMES[masking.RULE_CAUSAL] == "causal"


@pytest.mark.slow
def test_extended_checkpoint_exports_to_transformers(tmp_path, vocab):
  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.convert import commands
  from kmlm_jax.models.extend import extend_checkpoint
  config = preset("tiny", vocab_size=250002, hidden_size=32, num_heads=2, intermediate_size=64,
                  num_layers=1)
  params = mc.model_params(Encoder(config, rngs=nnx.Rngs(0)))
  tok = tmp_path / "tok"
  tok.mkdir()
  shutil.copy(real_xlmr_tokenizer_json(), tok / "tokenizer.json")
  mc.save_model_checkpoint(tmp_path / "base", config, params, tokenizer_dir=tok)
  ids = extend_checkpoint(tmp_path / "base", tmp_path / "ext", prixlm.added_tokens(LANGS))
  assert ids[0] == 250002
  report = commands.checkpoint_to_hf(tmp_path / "ext", tmp_path / "hf", verify=True)
  assert report.ok()
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  hf_model = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf")
  assert hf_model.config.vocab_size == len(hf_tok) == 250009
  assert hf_tok.convert_tokens_to_ids("[EOS]") == ids[3]
  new, base = mc.load_model_checkpoint(tmp_path / "ext")[1], params
  np.testing.assert_array_equal(new["embeddings"]["word"][:250002], base["embeddings"]["word"])
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == 250009
