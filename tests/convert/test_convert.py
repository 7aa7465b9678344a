"""Conversion in both directions: round trips, the CLI on real weights, bad input."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from kmlm_jax.assets import real_minilm_dir
from kmlm_jax.cli import main as cli_main
from kmlm_jax.convert import commands, hf

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _cli(*args):
  """Runs the installed CLI in a fresh process; returns (code, stdout, stderr)."""
  proc = subprocess.run([sys.executable, "-m", "kmlm_jax.cli", *map(str, args)],
                        capture_output=True, text=True, cwd=ROOT)
  return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("flavour", ["xlmr", "bert"])
def test_round_trip_is_bit_identical(flavour, hf_dirs, tmp_path):
  source = hf_dirs(flavour, "tiny")
  commands.hf_to_checkpoint(source, tmp_path / "ckpt")
  commands.checkpoint_to_hf(tmp_path / "ckpt", tmp_path / "back")
  original = load_file(source / "model.safetensors")
  back = load_file(tmp_path / "back" / "model.safetensors")
  assert sorted(original) == sorted(back)
  for name, value in original.items():
    assert back[name].dtype == value.dtype
    np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_convert_does_not_import_tensorflow(hf_dirs, tmp_path):
  # Conversion memory is measured against the model size (bench/convert_large.py);
  # TensorFlow + seqio would add ~0.7 GB and 3 s of start-up to every convert.
  code = ("import sys; from kmlm_jax.cli import main; "
          f"rc = main(['convert', '--from-hf', {str(hf_dirs('xlmr', 'tiny'))!r}, "
          f"'--to', {str(tmp_path / 'ckpt')!r}]); "
          "print(rc, sorted(m for m in ('tensorflow', 'seqio', 'torch') if m in sys.modules))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
  assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stderr


@pytest.mark.slow
def test_real_bert_converts_and_verifies_through_cli(tmp_path):
  code, out, err = _cli("convert", "--from-hf", real_minilm_dir(), "--to", tmp_path / "ckpt",
                        "--verify")
  assert code == 0, err
  last = out.strip().splitlines()[-1]
  assert last.startswith("max_abs_diff=")
  assert float(last.split("=")[1]) < 1e-4
  assert "MLM head was initialised" in out
  assert "verify input: the 10 sample sentences" in out
  assert (tmp_path / "ckpt" / "tokenizer" / "vocab.txt").exists()

  code, out, err = _cli("convert", "--from", tmp_path / "ckpt", "--to-hf", tmp_path / "hf",
                        "--verify")
  assert code == 0, err
  assert float(out.strip().splitlines()[-1].split("=")[1]) < 1e-4
  # Every tensor of the bare encoder comes back bit for bit, under the MaskedLM prefix.
  original = load_file(real_minilm_dir() / "model.safetensors")
  back = load_file(tmp_path / "hf" / "model.safetensors")
  for name, value in original.items():
    if name == "embeddings.position_ids":
      continue
    np.testing.assert_array_equal(back["bert." + name], value, err_msg=name)
  import transformers
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]
  assert tok.model_max_length == 512  # = max_position_embeddings (BERT: no offset)


def test_failed_verify_writes_nothing(hf_dirs, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(commands.verify_lib, "TOLERANCE", 0.0)
  target = tmp_path / "ckpt"
  code = cli_main(["convert", "--from-hf", str(hf_dirs("xlmr", "tiny")), "--to", str(target),
                   "--verify"])
  out, err = capsys.readouterr()
  assert code == 1
  assert out.strip().splitlines()[-1].startswith("max_abs_diff=")
  assert "verify failed" in err
  assert not target.exists()
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt.tmp")]


# ---------------------------------------------------------------- bad input


def _copy(src, dst):
  shutil.copytree(src, dst)
  return dst


def _edit_tensors(directory, edit):
  tensors = load_file(directory / "model.safetensors")
  edit(tensors)
  save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def _expect_error(capsys, args, *needles):
  code = cli_main(args)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2
  assert len(err) == 1, err
  for needle in needles:
    assert needle in err[0], err[0]


def test_missing_directory(capsys, tmp_path):
  _expect_error(capsys, ["convert", "--from-hf", str(tmp_path / "nope"), "--to",
                         str(tmp_path / "c")], "nope", "no such directory")


def test_unsupported_architecture(capsys, hf_dirs, tmp_path):
  d = _copy(hf_dirs("bert", "tiny"), tmp_path / "gpt")
  cfg = json.loads((d / "config.json").read_text())
  cfg.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
  (d / "config.json").write_text(json.dumps(cfg))
  _expect_error(capsys, ["convert", "--from-hf", str(d), "--to", str(tmp_path / "c")],
                "config.json", "unsupported model_type 'gpt2'")


def test_missing_tensor(capsys, hf_dirs, tmp_path):
  d = _copy(hf_dirs("bert", "tiny"), tmp_path / "m")
  _edit_tensors(d, lambda t: t.pop("bert.encoder.layer.1.output.dense.bias"))
  _expect_error(capsys, ["convert", "--from-hf", str(d), "--to", str(tmp_path / "c")],
                "missing tensor 'bert.encoder.layer.1.output.dense.bias'")
  assert not (tmp_path / "c").exists()


def test_unexpected_tensor(capsys, hf_dirs, tmp_path):
  d = _copy(hf_dirs("xlmr", "tiny"), tmp_path / "u")
  _edit_tensors(d, lambda t: t.__setitem__("roberta.extra.weight", np.zeros(3, np.float32)))
  _expect_error(capsys, ["convert", "--from-hf", str(d), "--to", str(tmp_path / "c")],
                "unexpected tensor 'roberta.extra.weight'")


def test_misshaped_tensor(capsys, hf_dirs, tmp_path):
  d = _copy(hf_dirs("xlmr", "tiny"), tmp_path / "s")
  name = "roberta.encoder.layer.0.intermediate.dense.weight"
  _edit_tensors(d, lambda t: t.__setitem__(name, np.zeros((64, 64), np.float32)))
  _expect_error(capsys, ["convert", "--from-hf", str(d), "--to", str(tmp_path / "c")],
                f"tensor '{name}' has shape (64, 64)", "layers.mlp_in_kernel")


def test_untied_decoder_is_refused(capsys, hf_dirs, tmp_path):
  d = _copy(hf_dirs("xlmr", "tiny"), tmp_path / "t")
  _edit_tensors(d, lambda t: t.__setitem__("lm_head.decoder.weight", np.ones((1000, 64),
                                                                             np.float32)))
  _expect_error(capsys, ["convert", "--from-hf", str(d), "--to", str(tmp_path / "c")],
                "'lm_head.decoder.weight' differs from embeddings.word")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(capsys, hf_dirs, tmp_path, damage):
  d = _copy(hf_dirs("bert", "tiny"), tmp_path / "x")
  f = d / "model.safetensors"
  data = f.read_bytes()
  f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 10)
  _expect_error(capsys, ["convert", "--from-hf", str(d), "--to", str(tmp_path / "c")],
                "model.safetensors", "corrupt")


def test_no_weights_file(capsys, hf_dirs, tmp_path):
  d = _copy(hf_dirs("bert", "tiny"), tmp_path / "w")
  (d / "model.safetensors").unlink()
  _expect_error(capsys, ["convert", "--from-hf", str(d), "--to", str(tmp_path / "c")],
                "no model.safetensors")


def test_existing_destination_is_kept(capsys, hf_dirs, tmp_path):
  (tmp_path / "c").mkdir()
  (tmp_path / "c" / "keep").write_text("x")
  _expect_error(capsys, ["convert", "--from-hf", str(hf_dirs("bert", "tiny")), "--to",
                         str(tmp_path / "c")], "already exists")
  assert (tmp_path / "c" / "keep").read_text() == "x"


def test_not_a_checkpoint(capsys, tmp_path):
  (tmp_path / "empty").mkdir()
  _expect_error(capsys, ["convert", "--from", str(tmp_path / "empty"), "--to-hf",
                         str(tmp_path / "h")], "model_config.json", "missing")


def test_pytorch_bin_and_old_checkpoint_names(hf_dirs, tmp_path):
  """pytorch_model.bin with the NSP head and position_ids buffer, as mBERT ships."""
  import torch
  d = _copy(hf_dirs("bert", "tiny"), tmp_path / "bin")
  tensors = load_file(d / "model.safetensors")
  (d / "model.safetensors").unlink()
  state = {k: torch.from_numpy(v) for k, v in tensors.items()}
  state["cls.seq_relationship.weight"] = torch.zeros(2, 64)
  state["bert.embeddings.position_ids"] = torch.arange(128)[None]
  state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
  torch.save(state, d / "pytorch_model.bin")
  loaded = hf.load_hf_params(d)
  assert loaded.has_mlm_head
  assert sorted(loaded.dropped) == ["bert.embeddings.position_ids", "cls.seq_relationship.weight"]
  np.testing.assert_array_equal(loaded.params["embeddings"]["word"],
                                tensors["bert.embeddings.word_embeddings.weight"])


# ---------------------------------------------------------------- non-finite weights

NAN_TENSOR = "roberta.encoder.layer.1.attention.self.query.weight"


@pytest.fixture(scope="module")
def nan_hf(hf_dirs, tmp_path_factory):
  """The tiny XLM-R with one NaN and one inf in one tensor."""
  d = _copy(hf_dirs("xlmr", "tiny"), tmp_path_factory.mktemp("nan") / "hf")

  def poison(t):
    t[NAN_TENSOR][0, :2] = [np.nan, np.inf]
  _edit_tensors(d, poison)
  return d


def test_non_finite_weights_are_warned_in_both_directions(capsys, nan_hf, tmp_path):
  assert cli_main(["convert", "--from-hf", str(nan_hf), "--to", str(tmp_path / "ckpt")]) == 0
  warning = f"warning: non-finite weights in 1 tensor(s): {NAN_TENSOR} (1 NaN, 1 inf of 4096)"
  assert warning in capsys.readouterr().out.splitlines()
  assert cli_main(["convert", "--from", str(tmp_path / "ckpt"), "--to-hf",
                   str(tmp_path / "hf")]) == 0
  assert warning in capsys.readouterr().out.splitlines()
  assert commands.hf_to_checkpoint(nan_hf, tmp_path / "again").nonfinite == [
      f"{NAN_TENSOR} (1 NaN, 1 inf of 4096)"]


def test_verify_names_the_non_finite_tensor(capsys, nan_hf, tmp_path):
  code = cli_main(["convert", "--from-hf", str(nan_hf), "--to", str(tmp_path / "ckpt"),
                   "--verify"])
  out, err = capsys.readouterr()
  assert code == 1
  assert err.count("\n") == 1 and "verify failed: max_abs_diff=nan" in err
  assert f"non-finite weights: {NAN_TENSOR} (1 NaN, 1 inf of 4096); nothing written" in err
  assert not (tmp_path / "ckpt").exists()


# ---------------------------------------------------------------- exports


@pytest.fixture(scope="module")
def trimmed_ckpt(hf_dirs, tmp_path_factory):
  """A checkpoint as training exports it: tokenizer/ holds only a tokenizer.json, here
  the real XLM-R one trimmed to the verify sentences (83 ids, within the model's 1000)."""
  from kmlm_jax.assets import AssetError, real_xlmr_tokenizer_json
  from kmlm_jax.convert.verify import SAMPLE_SENTENCES
  from kmlm_jax.text.trim import trim_tokenizer_json
  try:
    full = real_xlmr_tokenizer_json()
  except AssetError as e:
    pytest.skip(str(e))
  t = tmp_path_factory.mktemp("trimmed")
  (t / "tok").mkdir()
  trim_tokenizer_json(full, SAMPLE_SENTENCES, t / "tok" / "tokenizer.json")
  commands.hf_to_checkpoint(hf_dirs("xlmr", "tiny"), t / "ckpt")
  shutil.copytree(t / "tok", t / "ckpt" / "tokenizer")
  return t / "ckpt"


def test_export_carries_the_true_max_length_and_verify_uses_the_checkpoint_tokenizer(
    trimmed_ckpt, tmp_path):
  import transformers
  report = commands.checkpoint_to_hf(trimmed_ckpt, tmp_path / "hf", verify=True)
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert config["max_position_embeddings"] == 130
  exported = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
  assert exported["model_max_length"] == 130 - 2  # XLM-R positions start at pad + 1 = 2
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  assert tok.model_max_length == 128
  used = next(line for line in report.lines if line.startswith("verify input: "))
  assert used.startswith("verify input: the 10 sample sentences ('The capital of France is "
                         "Paris.' ... 'Москва — столица России.') tokenized by the tokenizer "
                         f"of {trimmed_ckpt}: ")
  assert used.endswith(" 0 unknown")
  assert report.max_abs_diff < 1e-4


def test_verify_says_when_it_uses_random_ids(hf_dirs, tmp_path):
  commands.hf_to_checkpoint(hf_dirs("bert", "tiny"), tmp_path / "ckpt")
  report = commands.checkpoint_to_hf(tmp_path / "ckpt", tmp_path / "hf", verify=True)
  assert f"verify input: RANDOM token ids, not sentences (10 rows, seed 0): no tokenizer in " \
         f"{tmp_path / 'ckpt'}" in report.lines
  assert "note: no tokenizer files in the checkpoint; none exported" in report.lines


def test_verify_batch_names_why_a_tokenizer_does_not_fit(trimmed_ckpt, tmp_path):
  from kmlm_jax.config import preset
  from kmlm_jax.convert import verify
  commands.checkpoint_to_hf(trimmed_ckpt, tmp_path / "hf")
  tokenizer, source = verify.load_tokenizer(tmp_path / "hf", "CKPT")
  assert source == "CKPT"
  small = preset("tiny", vocab_size=50)
  *_, described = verify.sample_batch(small, tokenizer, source)
  assert described.startswith("RANDOM token ids, not sentences")
  assert described.endswith("the tokenizer of CKPT gives id 81, beyond the model's vocab_size 50")
  *_, described = verify.sample_batch(small.replace(pad_token_id=0), tokenizer, source)
  assert described.endswith("the tokenizer of CKPT pads with id 1, the model with 0")
  assert verify.load_tokenizer(trimmed_ckpt / "params", "X") == (None, "no tokenizer in X")
  (tmp_path / "hf" / "tokenizer.json").write_text("{garbled")
  tokenizer, why = verify.load_tokenizer(tmp_path / "hf", "X")
  assert tokenizer is None and why.startswith("the tokenizer of X cannot be loaded (")


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755),
                                                        (0o027, 0o640, 0o750)])
def test_written_modes_follow_the_umask(hf_dirs, tmp_path, umask, file_mode, dir_mode):
  import os
  old = os.umask(umask)
  try:
    commands.hf_to_checkpoint(hf_dirs("bert", "tiny"), tmp_path / "ckpt")
    commands.checkpoint_to_hf(tmp_path / "ckpt", tmp_path / "hf")
  finally:
    os.umask(old)
  for root in (tmp_path / "ckpt", tmp_path / "hf"):
    paths = [root, *root.rglob("*")]
    assert len(paths) >= 3
    for path in paths:
      assert path.stat().st_mode & 0o777 == (dir_mode if path.is_dir() else file_mode), path


# ---------------------------------------------------------------- init

SMALL = dict(hidden_size=8, num_heads=2, intermediate_size=16, num_layers=1)


@pytest.fixture
def zero_init(monkeypatch):
  """`init` with zero parameters instead of its random initialisation (compile-bound: up
  to 30 s here), for the tests of what else it writes."""
  import jax

  from kmlm_jax import model_checkpoint as mc
  monkeypatch.setattr("kmlm_jax.models.encoder.Encoder", lambda config, rngs: config)
  monkeypatch.setattr(mc, "model_params", lambda config: jax.tree.map(
      lambda s: np.zeros(s.shape, s.dtype), mc.abstract_params(config)))


def test_init_carries_the_real_xlmr_tokenizer(tmp_path, zero_init):
  from kmlm_jax.assets import AssetError, real_xlmr_tokenizer_json
  from kmlm_jax.model_checkpoint import read_model_config
  try:
    real = real_xlmr_tokenizer_json()
  except AssetError as e:
    pytest.skip(str(e))
  report = commands.init_checkpoint("xlmr-base", tmp_path / "ckpt", **SMALL)
  assert (tmp_path / "ckpt" / "tokenizer" / "tokenizer.json").read_bytes() == real.read_bytes()
  assert report.lines[1] == f"tokenizer: the real XLM-R tokenizer (250,002 ids) from {real}"
  assert read_model_config(tmp_path / "ckpt")[0].vocab_size == 250002


@pytest.mark.slow  # the random initialisation compiles: 25 s here
def test_init_of_tiny_says_no_tokenizer_fits(capsys, tmp_path):
  assert cli_main(["init", "--preset", "tiny", "--to", str(tmp_path / "ckpt")]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[1].startswith("note: the real XLM-R tokenizer (250,002 ids) does not fit "
                           "vocab_size 1024; the checkpoint has no tokenizer")
  assert not (tmp_path / "ckpt" / "tokenizer").exists()
  assert (tmp_path / "ckpt" / "params").is_dir()


def test_init_of_mbert_says_none_is_installed(tmp_path, zero_init):
  report = commands.init_checkpoint("mbert-base", tmp_path / "ckpt", **SMALL)
  assert report.lines[1].startswith("note: no mBERT tokenizer is installed")
  assert not (tmp_path / "ckpt" / "tokenizer").exists()
