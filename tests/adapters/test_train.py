"""Knowledge-adapter training on the one trainer: mesh-independent results, the
non-finite guard, and a checkpoint base computed with the run's settings."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from flax import nnx

from kmlm_jax import model_checkpoint as mc
from kmlm_jax.adapters import train as train_lib
from kmlm_jax.config import MeshConfig
from kmlm_jax.errors import NonFiniteLoss
from kmlm_jax.models.encoder import Encoder
from tests.adapters.test_adapters import _config

pytestmark = pytest.mark.slow  # each test compiles a model on several meshes


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("kg") / "sample"
  train_lib.build_sample_corpus(out, streams=False)
  return out


def _run(config, workdir, mesh=(1, 1, 1)):
  """(summary, trained {"adapters", "fusion"} params) of a run on prod(mesh) devices."""
  config = dataclasses.replace(config, mesh=MeshConfig(shape=mesh))
  devices = jax.devices()[:int(np.prod(mesh))]
  summary = train_lib.train(config, workdir, progress=False, devices=devices)
  return summary, train_lib.load_adapters(workdir / "adapters")[0]


@pytest.fixture(scope="module")
def one_device(corpus_dir, tmp_path_factory):
  return _run(_config(corpus_dir, stages=("tp", "fusion")), tmp_path_factory.mktemp("one"))


@pytest.mark.parametrize("mesh", [(8, 1, 1), (2, 2, 2)])
def test_eight_devices_train_like_one(corpus_dir, one_device, tmp_path, mesh):
  want, want_params = one_device
  got, got_params = _run(_config(corpus_dir, stages=("tp", "fusion")), tmp_path, mesh)
  assert [(h["stage"], h["step"]) for h in got["history"]] == [
      ("tp", 1), ("tp", 2), ("fusion", 1), ("fusion", 2)]
  np.testing.assert_allclose([h["loss"] for h in got["history"]],
                             [h["loss"] for h in want["history"]], rtol=1e-5)
  assert got["base_fingerprint"] == want["base_fingerprint"] and got["base_unchanged"]
  for group in ("adapters", "fusion"):
    # Within 1e-5 of the group's scale: Adam turns float noise in (near-)zero gradients
    # (fusion.key_bias: the softmax over adapters ignores it) into noise-sized updates.
    scale = max(np.abs(v).max() for v in want_params[group].values())
    for name, value in want_params[group].items():
      np.testing.assert_allclose(got_params[group][name], value, rtol=1e-5, atol=1e-5 * scale,
                                 err_msg=f"{mesh} {group}.{name}")


def test_a_non_finite_loss_stops_training(corpus_dir, tmp_path):
  config = _config(corpus_dir, stages=("tp",), learning_rate=float("inf"))
  with pytest.raises(NonFiniteLoss, match=r"^adapters stage tp step \d+: .*not finite"):
    _run(config, tmp_path)


@pytest.fixture(scope="module")
def checkpoint(corpus_dir, tmp_path_factory):
  model_config = _config(corpus_dir).model
  path = tmp_path_factory.mktemp("ckpt") / "base"
  flat = mc.model_params(Encoder(model_config, rngs=nnx.Rngs(7)))
  mc.save_model_checkpoint(path, model_config, flat)
  return path


@pytest.mark.parametrize("setting", [{"scan_layers": False}, {"dtype": "bfloat16"},
                                     {"remat_policy": "full"}])
def test_a_checkpoint_base_trains_with_the_run_settings(corpus_dir, checkpoint, tmp_path,
                                                        setting):
  config = _config(corpus_dir, stages=("tp",))
  config = dataclasses.replace(config, model=config.model.replace(**setting),
                               init_from=str(checkpoint))
  (name, value), = setting.items()
  assert getattr(train_lib.resolve(config, tmp_path).model_config, name) == value
  summary, _ = _run(config, tmp_path)
  assert summary["base"] == f"checkpoint {checkpoint}" and summary["base_unchanged"]
  assert all(np.isfinite(h["loss"]) for h in summary["history"])
  meta = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
  assert meta["model"][name] == value  # the run computed with its own setting
