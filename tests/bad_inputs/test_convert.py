"""Bad input to `kmlm-jax convert` and `kmlm-jax init`: one line naming the file and
field, exit 2 (bad input) or 1 (a destination that cannot be written), nothing written.

The transformers cases damage a copy of a tiny saved XLM-R MaskedLM; the checkpoint
cases a checkpoint converted from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kmlm_jax import fileio
from kmlm_jax.convert import commands
from kmlm_jax.errors import WriteError
from tests.bad_inputs import check

INDEX = "model.safetensors.index.json"


def assert_nothing_left(out: Path) -> None:
  assert not out.exists()
  if out.parent.exists():
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, hf_dirs):
  """A good model checkpoint (no tokenizer)."""
  path = tmp_path_factory.mktemp("convert_bad") / "ckpt"
  commands.hf_to_checkpoint(hf_dirs("xlmr", "tiny"), path)
  return path


@pytest.fixture
def hf(hf_dirs, tmp_path):
  """A copy of the tiny transformers directory, to damage."""
  return Path(shutil.copytree(hf_dirs("xlmr", "tiny"), tmp_path / "hf"))


def _edit_config(hf: Path, **fields) -> None:
  config = json.loads((hf / "config.json").read_text())
  (hf / "config.json").write_text(json.dumps({**config, **fields}))


def _index(hf: Path, weight_map) -> None:
  """Replaces model.safetensors by an index mapping every tensor to `weight_map` (a file
  name), or writes `weight_map` itself when it is not a string."""
  from safetensors import safe_open
  with safe_open(hf / "model.safetensors", "np") as f:
    names = list(f.keys())
  shutil.move(hf / "model.safetensors", hf.parent / "outside.safetensors")
  index = {"weight_map": dict.fromkeys(names, weight_map)} if isinstance(weight_map, str) \
      else weight_map
  (hf / INDEX).write_text(json.dumps(index))


def _last(*steps):
  """The last of `steps` (the needles), after the edits before it have run."""
  return steps[-1]


def _latin1(path: Path, **fields) -> None:
  """`path`'s JSON object with `fields` added, saved as Latin-1 (not UTF-8)."""
  raw = json.loads(path.read_text()) if path.exists() else {}
  path.write_bytes(json.dumps({**raw, **fields}, ensure_ascii=False).encode("latin-1"))


def _tokenizer_config(hf: Path, text: str) -> None:
  (hf / "tokenizer_config.json").write_text(text)


# Each case damages `hf` (in a folder `t`) and returns the needles of the error line.
HF_CASES = {
    "zero_heads": lambda hf, t: _last(
        _edit_config(hf, num_attention_heads=0),
        ["hf/config.json", "'num_attention_heads'", "at least 1, got 0"]),
    "negative_layers": lambda hf, t: _last(
        _edit_config(hf, num_hidden_layers=-2),
        ["config.json", "'num_hidden_layers'", "at least 1"]),
    "string_width": lambda hf, t: _last(
        _edit_config(hf, hidden_size="64"),
        ["config.json", "'hidden_size'", "expected int", '"64"']),
    "heads_not_dividing": lambda hf, t: _last(
        _edit_config(hf, num_attention_heads=5), ["config.json", "num_heads", "5", "64"]),
    "pad_beyond_vocab": lambda hf, t: _last(
        _edit_config(hf, pad_token_id=1000),
        ["config.json", "pad_token_id", "1000", "vocab_size"]),
    "unknown_activation": lambda hf, t: _last(
        _edit_config(hf, hidden_act="swish9"), ["config.json", "hidden_act 'swish9'"]),
    "latin1_config": lambda hf, t: _last(
        _latin1(hf / "config.json", _name_or_path="Modèle"),
        ["hf/config.json", "not UTF-8", "save it as UTF-8"]),
    "config_list": lambda hf, t: _last(
        (hf / "config.json").write_text("[1, 2]"),
        ["hf/config.json", "expected a JSON object", "array"]),
    "index_list": lambda hf, t: _last(_index(hf, []), [f"hf/{INDEX}", "expected a JSON object"]),
    "index_weight_map_list": lambda hf, t: _last(
        _index(hf, {"weight_map": ["model.safetensors"]}),
        [INDEX, "'weight_map'", "tensor name -> file name"]),
    "index_latin1": lambda hf, t: _last(
        _index(hf, {}), _latin1(hf / INDEX, weight_map={"é": "model.safetensors"}),
        [INDEX, "not UTF-8"]),
    "index_outside": lambda hf, t: _last(
        _index(hf, "../outside.safetensors"),
        [f"hf/{INDEX}", "'../outside.safetensors'", "outside", "must be in the model directory"]),
    "index_climbing": lambda hf, t: _last(
        _index(hf, "sub/../../outside.safetensors"),
        [INDEX, "'sub/../../outside.safetensors'", "outside"]),
    "index_absolute": lambda hf, t: _last(
        _index(hf, str(t / "outside.safetensors")),
        [INDEX, f"'{t / 'outside.safetensors'}'", "outside"]),
    "index_missing_shard": lambda hf, t: _last(
        _index(hf, "model-00002-of-00002.safetensors"),
        ["hf/model-00002-of-00002.safetensors", "missing"]),
    "tokenizer_file_outside": lambda hf, t: _last(
        _tokenizer_config(hf, json.dumps({"tokenizer_file": "/etc/passwd"})),
        ["hf/tokenizer_config.json", "'tokenizer_file'", "'/etc/passwd'", "outside"]),
    "vocab_file_climbing": lambda hf, t: _last(
        _tokenizer_config(hf, json.dumps({"vocab_file": "../vocab.txt"})),
        ["tokenizer_config.json", "'vocab_file'", "'../vocab.txt'", "outside"]),
    "tokenizer_config_list": lambda hf, t: _last(
        _tokenizer_config(hf, "[]"), ["hf/tokenizer_config.json", "JSON object"]),
}


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_from_hf(capsys, hf, tmp_path, case):
  needles = HF_CASES[case](hf, tmp_path)
  check(capsys, ["convert", "--from-hf", hf, "--to", tmp_path / "out"], "convert", needles)
  assert_nothing_left(tmp_path / "out")


def _damaged_ckpt(ckpt: Path, tmp: Path, name: str, data: bytes | str) -> Path:
  """A copy of `ckpt` whose file `name` holds `data`."""
  path = Path(shutil.copytree(ckpt, tmp / "ckpt"))
  (path / name).parent.mkdir(exist_ok=True)
  if isinstance(data, str):
    data = data.encode()
  (path / name).write_bytes(data)
  return path


def _model_config(ckpt: Path, **fields) -> str:
  raw = json.loads((ckpt / "model_config.json").read_text())
  raw["model"].update(fields)
  return json.dumps(raw)


CKPT_CASES = {
    "latin1_model_config": lambda c: ("model_config.json", '{"model": {"flavour": "é"}}'.encode(
        "latin-1"), ["ckpt/model_config.json", "not UTF-8"]),
    "model_config_list": lambda c: ("model_config.json", "[]",
                                    ["ckpt/model_config.json", "JSON object", "array"]),
    "zero_heads": lambda c: ("model_config.json", _model_config(c, num_heads=0),
                             ["model_config.json", "'model.num_heads'", "at least 1"]),
    "pad_beyond_vocab": lambda c: ("model_config.json", _model_config(c, pad_token_id=5000),
                                   ["model_config.json", "pad_token_id", "5000", "vocab_size"]),
    "tokenizer_file_outside": lambda c: (
        "tokenizer/tokenizer_config.json", json.dumps({"tokenizer_file": "../../secret.json"}),
        ["ckpt/tokenizer/tokenizer_config.json", "'tokenizer_file'", "outside"]),
}


@pytest.mark.parametrize("case", sorted(CKPT_CASES))
def test_from_checkpoint(capsys, ckpt, tmp_path, case):
  name, data, needles = CKPT_CASES[case](ckpt)
  source = _damaged_ckpt(ckpt, tmp_path, name, data)
  check(capsys, ["convert", "--from", source, "--to-hf", tmp_path / "out"], "convert", needles)
  assert_nothing_left(tmp_path / "out")


def test_from_hf_with_to_hf_is_a_usage_error(capsys, hf, tmp_path):
  check(capsys, ["convert", "--from-hf", hf, "--to-hf", tmp_path / "out"], "convert",
        ["--from-hf", "--to CKPT"], code=2)
  assert_nothing_left(tmp_path / "out")


# ---------------------------------------------------------------- destinations


@pytest.mark.parametrize("command", ["from_hf", "from_checkpoint", "init"])
def test_read_only_destination(capsys, tmpfs, hf, ckpt, command):
  mount = tmpfs("ro", read_only=True)
  out = mount / "sub" / "out"
  argv = {"from_hf": ["convert", "--from-hf", hf, "--to", out],
          "from_checkpoint": ["convert", "--from", ckpt, "--to-hf", out],
          "init": ["init", "--preset", "tiny", "--to", out]}[command]
  check(capsys, argv, argv[0], [str(out), "cannot write in", str(mount), "read-only"], code=1)
  assert list(mount.iterdir()) == []


@pytest.mark.parametrize("command", ["from_hf", "from_checkpoint"])
def test_full_destination_is_refused_before_converting(capsys, tmpfs, hf, ckpt, command):
  mount = tmpfs("small", size="256k")
  out = mount / "out"
  argv = (["--from-hf", hf, "--to", out] if command == "from_hf"
          else ["--from", ckpt, "--to-hf", out])
  check(capsys, ["convert", *argv], "convert", [str(out), "not enough space", "MB free"],
        code=1)
  assert list(mount.iterdir()) == []


@pytest.mark.parametrize("command", ["from_hf", "from_checkpoint"])
def test_disk_filling_up_while_writing(capsys, tmpfs, hf, ckpt, monkeypatch, command):
  """The space check passes (another writer fills the disk): the writer's own failure
  (Orbax, safetensors) is the same one line, exit 1, and nothing is left."""
  monkeypatch.setattr(fileio, "check_free_space", lambda *a: None)
  mount = tmpfs("full", size="256k")
  out = mount / "out"
  argv = (["--from-hf", hf, "--to", out] if command == "from_hf"
          else ["--from", ckpt, "--to-hf", out])
  check(capsys, ["convert", *argv], "convert", [f"{out}: cannot write", "No space left"],
        code=1)
  assert list(mount.iterdir()) == []


def test_write_error_names_the_destination_not_a_temporary(tmpfs, ckpt, monkeypatch):
  monkeypatch.setattr(fileio, "check_free_space", lambda *a: None)
  out = tmpfs("full", size="256k") / "out"
  with pytest.raises(WriteError) as e:
    commands.checkpoint_to_hf(ckpt, out)
  assert str(e.value).startswith(f"{out}: cannot write (No space left on device)")
