"""The adapters' original schedule (train.schedule="original"): its optimizer, its batch
selection, its config checks, and a tiny run (alternating adapters with their own moments)."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from transformers import get_cosine_with_hard_restarts_schedule_with_warmup

from kmlm_jax.adapters import train as train_lib
from kmlm_jax.adapters.config import ORIGINAL_TRAIN, load_adapter_config, original_train
from kmlm_jax.config import MeshConfig
from kmlm_jax.experiment import ConfigError
from kmlm_jax.training.optimizer import cosine_restarts_schedule, make_optimizer
from tests.adapters.test_adapters import _config

ROOT = Path(__file__).resolve().parents[2]


def _torch_schedule(warmup, total, cycles, n):
  """transformers' learning rates of the first n optimizer steps (peak 1)."""
  p = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.SGD([p], lr=1.0)
  sched = get_cosine_with_hard_restarts_schedule_with_warmup(
      opt, num_warmup_steps=warmup, num_training_steps=total, num_cycles=cycles)
  out = []
  for _ in range(n):
    out.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
  return np.asarray(out)


def test_the_schedule_is_transformers_cosine_with_hard_restarts():
  want = _torch_schedule(100, 2000, 5, 2100)
  got = np.asarray([cosine_restarts_schedule(1.0, 100, 2000, 5)(i) for i in range(2100)])
  np.testing.assert_allclose(got, want, atol=1e-6)
  # A state making every second step from an offset reads the shared schedule there.
  for offset in (0, 1):
    lane = np.asarray([cosine_restarts_schedule(1.0, 100, 2000, 5, 2, offset)(i)
                       for i in range(1000)])
    np.testing.assert_allclose(lane, want[offset:2000:2], atol=1e-6)


def test_the_original_config_and_optimizer_are_as_stated():
  """configs/adapters_original.py: AdamW lr 1e-4, weight decay 1e-4 on every parameter,
  cosine with 5 hard restarts after 1e4 warm-up steps, no clipping; 16 fusion rounds on
  10% / 20% of the batches at half of batch 128."""
  config = load_adapter_config(ROOT / "configs" / "adapters_original.py")
  t = config.train
  assert (t.schedule, t.learning_rate, t.weight_decay, t.warmup_steps, t.grad_clip_norm,
          t.restarts, t.fusion_rounds, t.fusion_fractions, t.batch_size, t.fusion_value_l2) == \
      ("original", 1e-4, 1e-4, 10_000, 0.0, 5, 16, (0.1, 0.2), 128, 0.0)
  assert config.data.pooling == "unmasked" and t.temperature == 0.1
  assert original_train() == dataclasses.replace(original_train(), **ORIGINAL_TRAIN)
  steps = 2 * t.adapter_steps
  opt = train_lib.original_optimizer(config, steps, stride=2, offset=1)
  tx = make_optimizer(opt)
  # Three AdamW updates of a matrix and a bias on gradients of very different norms
  # against a reference: not clipped, decoupled decay (5-20% of the update here) on the
  # bias too, learning rate from the schedule at steps 1, 3, 5.
  params = {"w": np.full((3, 2), 500.0, np.float32), "b": np.full((2,), -2000.0, np.float32)}
  rng = np.random.default_rng(0)
  state = tx.init(params)
  m = {k: np.zeros(x.shape) for k, x in params.items()}
  v = {k: np.zeros(x.shape) for k, x in params.items()}
  lrs = _torch_schedule(10_000, steps, 5, 8)[1::2] * 1e-4  # steps 1, 3, 5 (offset 1, stride 2)
  for i in range(3):
    scale = 10.0 ** (3 * i)  # clipping would even out these norms and change the updates
    grads = {k: rng.normal(0, scale, x.shape).astype(np.float32) for k, x in params.items()}
    updates, state = tx.update(grads, state, params)
    for k, p in params.items():
      m[k] = 0.9 * m[k] + 0.1 * grads[k]
      v[k] = 0.999 * v[k] + 0.001 * grads[k].astype(np.float64) ** 2
      mhat, vhat = m[k] / (1 - 0.9 ** (i + 1)), v[k] / (1 - 0.999 ** (i + 1))
      want = -lrs[i] * (mhat / (np.sqrt(vhat) + 1e-8) + 1e-4 * p)
      np.testing.assert_allclose(np.asarray(updates[k]), want, rtol=1e-4, err_msg=f"{k} {i}")


def test_fusion_rounds_take_a_tenth_and_a_fifth_of_the_batches(tmp_path):
  config = dataclasses.replace(_config(tmp_path, schedule="original"),
                               train=original_train(fusion_steps=1000))
  for part, fraction in enumerate((0.1, 0.2)):
    kept = [train_lib.fusion_selection(config, r, part) for r in range(16)]
    share = sum(map(len, kept)) / (16 * 1000)
    assert abs(share - fraction) < 0.01
    assert len({tuple(k) for k in kept}) == 16  # a new draw every round
  tiny = dataclasses.replace(config, train=original_train(fusion_steps=2))
  assert all(len(train_lib.fusion_selection(tiny, r, 0)) >= 1 for r in range(20))


@pytest.mark.parametrize("change,field", [
    ({"schedule": "paper"}, "train.schedule"),
    ({"schedule": "original", "batch_size": 1}, "train.batch_size"),
    ({"schedule": "original", "fusion_fractions": (0.1, 0.0)}, "train.fusion_fractions"),
    ({"schedule": "original", "restarts": 0}, "train.restarts"),
    ({"schedule": "original", "fusion_rounds": 0}, "train.fusion_rounds")])
def test_bad_schedule_settings_name_the_field(tmp_path, change, field):
  with pytest.raises(ConfigError, match=f"^{field}: "):
    _config(tmp_path, **change)


def test_the_original_schedule_needs_its_four_adapters_and_the_fusion(tmp_path):
  config = _config(tmp_path)
  no_es = dataclasses.replace(config, adapters=dataclasses.replace(
      config.adapters, names=("ep", "tp", "ts")), train=original_train())
  with pytest.raises(ConfigError, match=r"^train.schedule: .*lacks \['es'\]"):
    no_es.validate()
  no_fusion = dataclasses.replace(config, adapters=dataclasses.replace(
      config.adapters, fusion=False), train=original_train())
  with pytest.raises(ConfigError, match="^train.schedule: .*fusion"):
    no_fusion.validate()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("kg") / "sample"
  train_lib.build_sample_corpus(out, streams=False)
  return out


@pytest.mark.slow
def test_a_tiny_original_run_alternates_adapters_with_their_own_moments(corpus_dir, tmp_path):
  """tp, ep, ts, es, then 2 fusion rounds; each adapter moves alone on its share of one
  schedule: its slice equals a lane of that adapter alone on the same batches."""
  config = _config(corpus_dir, schedule="original", adapter_steps=3, fusion_steps=6,
                   fusion_rounds=2, log_every=2, learning_rate=1e-2, warmup_steps=2,
                   weight_decay=1e-4, grad_clip_norm=0.0)
  config = dataclasses.replace(config, mesh=MeshConfig(shape=(1, 1, 1)))
  devices = jax.devices()[:1]
  summary = train_lib.train(config, tmp_path / "wd", progress=False, devices=devices)
  selected = sum(len(train_lib.fusion_selection(config, r, p)) for r in range(2)
                 for p in range(2))
  assert summary["schedule"] == "original" and summary["base_unchanged"]
  assert summary["stages"] == ["tp", "ep", "ts", "es", "fusion"]
  assert summary["steps"] == {"tp": 3, "ep": 3, "ts": 3, "es": 3, "fusion": 2 * selected}
  order = [h["stage"] for h in summary["history"]]
  assert order[:4] == ["tp", "ep", "tp", "ep"] and order[-1] == "fusion"
  trained, _ = train_lib.load_adapters(tmp_path / "wd" / "adapters")

  setup = train_lib.resolve(config, tmp_path / "wd")
  run = train_lib.AdapterTrainer(setup, train_lib.make_partitioner(config, devices))
  batches = train_lib.make_sources(setup)
  start = run.place(train_lib.init_params(setup.model_config, config.adapters, 0))
  names = config.adapters.names
  for offset, name in enumerate(("tp", "ep")):
    lane = train_lib._Lane(run.trainer("adapters", train_lib.original_optimizer(
        config, 6, 2, offset)), start, name)
    log = train_lib._RunLog(config, tmp_path / f"alone-{name}")
    for s in range(3):
      lane.step(train_lib.stage_batch(batches[name].batch(s), names.index(name)), log)
    alone = jax.tree.map(np.asarray, lane.params["adapters"])
    a = names.index(name)
    for key, value in alone.items():
      np.testing.assert_allclose(trained["adapters"][key][:, a], value[:, a], rtol=1e-6,
                                 atol=1e-7, err_msg=f"{name} {key}")
      assert not np.array_equal(value[:, a], np.asarray(start["adapters"][key])[:, a])
    log.close()
