"""The metrics writer: TensorBoard always, Weights & Biases (offline mode) when asked."""

import importlib.util
import json
import struct
from pathlib import Path

import pytest

from kmlm_jax.errors import InputError
from kmlm_jax.evaluation.report import read_tensorboard
from kmlm_jax.training import metrics_writer
from tests.training.test_loop import _config


def wandb_history(wandb_dir: Path) -> list[dict]:
  """The logged rows ({"_step", name: value}) of the one offline W&B run under `wandb_dir`,
  read back from its .wandb file (a LevelDB-style log of `wandb_internal_pb2.Record`s)."""
  from wandb.proto import wandb_internal_pb2
  runs = sorted(Path(wandb_dir).glob("wandb/offline-run-*/run-*.wandb"))
  assert len(runs) == 1, runs
  data = runs[0].read_bytes()
  assert data[:4] == b":W&B"
  rows, pos, block, chunks = [], 7, 32768, []
  while pos + 7 <= len(data):
    if block - pos % block < 7:  # a block's tail too short for a header is padding
      pos += block - pos % block
      continue
    _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
    if kind == 0:
      break
    chunks.append(data[pos + 7:pos + 7 + length])
    pos += 7 + length
    if kind in (1, 4):  # a full record, or the last chunk of one
      record = wandb_internal_pb2.Record()
      record.ParseFromString(b"".join(chunks))
      chunks = []
      if record.WhichOneof("record_type") == "history":
        rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item})
  return rows


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
  monkeypatch.setenv("WANDB_SILENT", "true")
  (tmp_path / "wandb_dir").mkdir()
  return tmp_path / "wandb_dir"


def test_tensorboard_and_wandb_hold_the_scalars(tmp_path, offline_wandb):
  config = _config(wandb_project="kmlm-test")
  writer = metrics_writer.make_writer(config, tmp_path / "run")
  writer.write_scalars(1, {"loss": 2.5, "mlm/loss": 2.0})
  writer.write_scalars(2, {"loss": 1.5, "validation/loss": 3.25})
  writer.close()
  tb = read_tensorboard(tmp_path / "run" / "tb")
  assert tb["loss"] == [(1, 2.5), (2, 1.5)] and tb["validation/loss"] == [(2, 3.25)]
  rows = wandb_history(offline_wandb)
  assert [(r["_step"], r["loss"]) for r in rows] == [(1, 2.5), (2, 1.5)]
  assert rows[0]["mlm/loss"] == 2.0 and rows[1]["validation/loss"] == 3.25
  assert (tmp_path / "run" / metrics_writer.WANDB_ID_FILE).read_text().strip()


def test_only_process_zero_writes(tmp_path):
  writer = metrics_writer.make_writer(_config(), tmp_path, process_index=1)
  writer.write_scalars(1, {"loss": 1.0})
  writer.close()
  assert not (tmp_path / "tb").exists()


def test_missing_wandb_is_an_input_error(tmp_path, monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "wandb" else real(name, *a))
  with pytest.raises(InputError, match=r"train.wandb_project: .*pip install kmlm-jax\[wandb\]"):
    metrics_writer.make_writer(_config(wandb_project="p"), tmp_path)
  from kmlm_jax.experiment import ConfigError, preflight
  with pytest.raises(ConfigError, match=r"pip install kmlm-jax\[wandb\]"):
    preflight(_config(wandb_project="p"))
