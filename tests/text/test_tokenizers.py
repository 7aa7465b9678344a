"""Tokenizer loading from local files, against transformers' own loaders."""

import shutil

import pytest
import transformers

from kmlm_jax.assets import real_minilm_dir, real_xlmr_tokenizer_json
from kmlm_jax.text.tokenizers import TokenizerError, load_tokenizer

TEXTS = ["The capital of France is Paris.", "Die Hauptstadt von Deutschland ist Berlin.",
         "東京は日本の首都です。", "Hà Nội là thủ đô của Việt Nam.", "Grüße aus Zürich!"]


def test_real_xlmr_tokenizer_json():
  tok = load_tokenizer(real_xlmr_tokenizer_json())
  assert len(tok) == 250002
  assert tok.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]) == \
      [0, 1, 2, 3, 250001]
  ids = tok("Hello world")["input_ids"]
  assert ids[0] == 0 and ids[-1] == 2 and len(ids) > 3


def test_xlmr_from_directory_equals_tokenizer_json(tmp_path):
  shutil.copy(real_xlmr_tokenizer_json(), tmp_path / "tokenizer.json")
  from_dir, from_file = load_tokenizer(tmp_path), load_tokenizer(tmp_path / "tokenizer.json")
  assert [from_dir(t)["input_ids"] for t in TEXTS] == [from_file(t)["input_ids"] for t in TEXTS]


def test_wordpiece_vocab_txt_equals_transformers_directory():
  ref = transformers.AutoTokenizer.from_pretrained(real_minilm_dir())
  ours = load_tokenizer(real_minilm_dir() / "vocab.txt", lowercase=True)
  assert [ours(t)["input_ids"] for t in TEXTS] == [ref(t)["input_ids"] for t in TEXTS]
  # Cased by default (mBERT is cased): "Paris" is not lowercased.
  cased = load_tokenizer(real_minilm_dir() / "vocab.txt")
  assert cased.tokenize("Paris") != ours.tokenize("Paris")


def test_sentencepiece_model_uses_fairseq_ids(tmp_path):
  """Reference: sentencepiece itself plus the fairseq rule (<s> ids+1 </s>, unk -> 3).

  (transformers' own .model loader cannot run here: it needs protobuf 7.)
  """
  import sentencepiece as spm
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(TEXTS * 20 + [f"word{i} token{i % 7} text" for i in range(300)]),
                    encoding="utf-8")
  spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"),
                                 vocab_size=90, character_coverage=1.0, minloglevel=2)
  sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
  ours = load_tokenizer(tmp_path / "sp.model")
  assert len(ours) == 90 + 2 and ours.mask_token_id == 91 and ours.pad_token_id == 1
  # Full-width letters and a ligature exercise the model's NFKC normalisation.
  for text in TEXTS + ["Ｐａｒｉｓ ﬁ text", "token3  word7"]:
    expected = [0] + [i + 1 if i != 0 else 3 for i in sp.encode(text)] + [2]
    assert ours(text)["input_ids"] == expected, text


def test_bad_tokenizer_paths(tmp_path):
  with pytest.raises(TokenizerError, match="no such"):
    load_tokenizer(tmp_path / "missing.json")
  (tmp_path / "empty").mkdir()
  with pytest.raises(TokenizerError, match="no tokenizer.json"):
    load_tokenizer(tmp_path / "empty")
  (tmp_path / "v.txt").write_text("a\nb\na\n")
  with pytest.raises(TokenizerError, match=r"v.txt:3: duplicate token 'a'"):
    load_tokenizer(tmp_path / "v.txt")
