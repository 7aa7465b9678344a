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
