"""Bad configs for `kmlm-jax train` and `kmlm-jax data cache`: caught by the validation pass
(`ExperimentConfig.validate`, `experiment.preflight`) before anything is built or compiled,
each as one error line naming the key and the allowed values, exit code 2, within seconds,
with no XLA compilation and no work directory or token cache left behind. Also: bad text
input (one FILE:LINE line, also across worker processes and Beam), the README's mesh example
on one device, and TensorFlow's CUDA probes kept off stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from kmlm_jax.config import MIN_SEQ_LENGTH
from kmlm_jax.data import cache
from tests.bad_inputs import check

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.py")  # 2 layers, 130 positions, the XLM-R tokenizer

# The cases named by the acceptance test: exit 2 within 10 s, no compile.
ACCEPTANCE = {
    "seq_length_beyond_positions": (["data.seq_length=256"],
                                    ["data.seq_length", "256", "position", f"{MIN_SEQ_LENGTH}, 128"]),
    "tokenizer_larger_than_model": (["model.vocab_size=1000"],
                                    ["model.vocab_size", "1000", "250002 tokens"]),
    "zero_predictions": (["data.max_predictions=0"], ["data.max_predictions", "integer >= 1"]),
    "accumulation_does_not_divide_batch": (["train.grad_accum_steps=3"],
                                           ["train.grad_accum_steps", "3", "1, 2, 4, 8"]),
    "batch_does_not_split_over_devices": (["data.batch_size=4"],
                                          ["data.batch_size", "8 devices", "multiple of 8"]),
}
# Every field in range, the sections against each other, mesh vs devices, paths and input.
CONFIG = {
    "zero_heads": (["model.num_heads=0"], ["model.num_heads", "0", "integer >= 1"]),
    "heads_do_not_divide_width": (["model.num_heads=3"], ["model.num_heads", "1, 2, 4, 8"]),
    "zero_width": (["model.hidden_size=0"], ["model.hidden_size", "integer >= 1"]),
    "dropout_of_one": (["model.dropout_rate=1"], ["model.dropout_rate", "[0, 1)"]),
    "unknown_dtype": (["model.dtype=float16"], ["model.dtype", "'float16'", "'bfloat16'"]),
    "zero_batch": (["data.batch_size=0"], ["data.batch_size", "integer >= 1"]),
    "short_rows": (["data.seq_length=8"], ["data.seq_length", f"integer >= {MIN_SEQ_LENGTH}"]),
    "predictions_beyond_row": (["data.max_predictions=200"],
                               ["data.max_predictions", "data.seq_length=128"]),
    "input_shards_do_not_divide_batch": (["data.input_shards=3"],
                                         ["data.input_shards", "1, 2, 4, 8", "0 (automatic)"]),
    "zero_temperature": (["data.language_temperature=0"],
                         ["data.language_temperature", "number > 0"]),
    "all_rates_zero": (["data.rate_mlm=0", "data.rate_knowledge=0", "data.rate_reasoning=0"],
                       ["data.rate_mlm", "kmlm_mix", "one > 0"]),
    "zero_steps": (["train.steps=0"], ["train.steps", "integer >= 1"]),
    "steps_none": (["train.steps=none"], ["train.steps", "none", "integer >= 1"]),
    "checkpoint_every_zero": (["train.checkpoint_every=0"],
                              ["train.checkpoint_every", "integer >= 1"]),
    "log_every_zero": (["train.log_every=0"], ["train.log_every", "integer >= 1"]),
    "eval_every_negative": (["train.eval_every=-1"], ["train.eval_every", "integer >= 0"]),
    "keep_no_checkpoints": (["train.keep_checkpoints=0"], ["train.keep_checkpoints", ">= 1"]),
    "nan_learning_rate": (["train.learning_rate=nan"], ["train.learning_rate", "nan",
                                                        "number >= 0"]),
    "negative_learning_rate": (["train.learning_rate=-1e-4"], ["train.learning_rate", ">= 0"]),
    "adam_b2_of_one": (["train.adam_b2=1"], ["train.adam_b2", "[0, 1)"]),
    "mixture_none": (["data.mixture=none"], ["data.mixture", "a string"]),
    "mesh_of_two_axes": (["mesh.shape=2,4"], ["mesh.shape", "3 sizes", "data, fsdp, tensor"]),
    "mesh_of_two_wildcards": (["mesh.shape=-1,-1,1"], ["mesh.shape", "one of them -1"]),
    "mesh_larger_than_devices": (["mesh.shape=2,2,4"],
                                 ["mesh.shape", "16 devices", "8 cpu devices",
                                  "XLA_FLAGS=--xla_force_host_platform_device_count=16"]),
    "micro_batch_does_not_split": (["train.grad_accum_steps=2"],
                                   ["micro-batch of 4 rows", "multiple of 16"]),
    "text_pattern_matches_nothing": (["data.text_pattern={tmp}/none/{{lang}}.txt"],
                                     ["data.text_pattern", "none/en.txt", "matches no file"]),
    "prixlm_without_its_tokens": (["data.mixture=prixlm"],
                                  ["data.vocab", "not a Prix-LM vocabulary", "[S] [P] [O]"]),
    "cache_of_another_length": (["data.cache_dir={tmp}/other_cache"],
                                ["other_cache", "seq_length=64", "data.seq_length=128"]),
}
# What `data cache` checks too (the model, the optimizer and the mesh are the run's).
DATA_CACHE = ("zero_predictions", "seq_length_beyond_positions", "zero_batch", "short_rows",
              "steps_none", "input_shards_do_not_divide_batch", "all_rates_zero",
              "text_pattern_matches_nothing", "prixlm_without_its_tokens",
              "cache_of_another_length")


@pytest.fixture(autouse=True)
def quiet_progress(monkeypatch):
  """No progress bars on stderr: `check` wants the error line alone there."""
  import tqdm
  monkeypatch.setattr("tqdm.auto.tqdm", lambda *a, **k: tqdm.tqdm(*a, **{**k, "disable": True}))


@pytest.fixture
def compiles():
  """The number of XLA compilations while the test runs (a `jax.monitoring` listener)."""
  seen = []
  listener = lambda name, *_, **__: seen.append(name)  # noqa: E731
  jax.monitoring.register_event_duration_secs_listener(listener)
  yield lambda: sum("backend_compile" in name for name in seen)
  jax.monitoring.unregister_event_duration_listener(listener)


def test_the_compile_listener_sees_compilations(compiles):
  jax.jit(lambda x: x * 3 + 1)(jax.numpy.arange(7))
  assert compiles() >= 1


def _overrides(overrides: list[str], tmp: Path) -> list[str]:
  if any("other_cache" in o for o in overrides):  # a token cache built for T=64
    (tmp / "other_cache").mkdir(exist_ok=True)
    (tmp / "other_cache" / "cache.json").write_text(json.dumps(
        {"format": cache.FORMAT, "seq_length": 64, "vocab": {}, "sources": {}}))
  overrides = [o.format(tmp=tmp) for o in overrides]
  if not any(o.startswith("data.cache_dir=") for o in overrides):
    overrides.append(f"data.cache_dir={tmp / 'cache'}")
  return overrides


@pytest.mark.parametrize("case", sorted({**ACCEPTANCE, **CONFIG}))
def test_train(capsys, compiles, tmp_path, case):
  overrides, needles = {**ACCEPTANCE, **CONFIG}[case]
  start = time.perf_counter()
  check(capsys, ["train", "--config", TINY, "--workdir", tmp_path / "wd",
                 *_overrides(overrides, tmp_path)], "train", needles)
  assert time.perf_counter() - start < 10
  assert compiles() == 0
  assert not (tmp_path / "wd").exists()
  assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("case", DATA_CACHE)
def test_data_cache(capsys, compiles, tmp_path, case):
  overrides, needles = {**ACCEPTANCE, **CONFIG}[case]
  check(capsys, ["data", "cache", "--config", TINY, *_overrides(overrides, tmp_path)],
        "data", needles)
  assert compiles() == 0
  assert not (tmp_path / "cache").exists()


def test_data_cache_does_not_need_the_model_or_the_mesh(tmp_path):
  """`data cache` reads no device and no model size: only `train` rejects these."""
  from kmlm_jax.experiment import load_config, preflight
  config = load_config(TINY, ["model.vocab_size=1000", "mesh.shape=2,2,4",
                              f"data.cache_dir={tmp_path / 'cache'}"])
  preflight(config, train=False)


@pytest.mark.parametrize("env,needles", [
    ({"JAX_COORDINATOR_ADDRESS": "localhost:1234"}, ["JAX_NUM_PROCESSES", "is not set"]),
    ({"SLURM_NTASKS": "two"}, ["SLURM_NTASKS='two'", "integer"])])
def test_bad_cluster_environment(capsys, monkeypatch, tmp_path, env, needles):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  check(capsys, ["train", "--config", TINY, "--workdir", tmp_path / "wd"], "train", needles)
  assert not (tmp_path / "wd").exists()


# ---------------------------------------------------------------- text input


def _bad_text(tmp_path: Path, languages) -> str:
  """Text files, one per language; en.txt has a Latin-1 byte on line 2."""
  for lang in languages:
    (tmp_path / f"{lang}.txt").write_bytes(b"A first line.\n" + (
        b"caf\xe9 noir\n" if lang == "en" else b"Another line.\n"))
  return f"data.text_pattern={tmp_path / '{lang}.txt'}"


@pytest.mark.parametrize("mixture,runner", [
    ("cc100_en", "direct"),  # one unit: tokenized in this process
    pytest.param("cc100", "direct", marks=pytest.mark.slow),  # ten units: worker processes
    pytest.param("cc100_en", "beam", marks=pytest.mark.slow)])
def test_non_utf8_text_line_is_one_line(capsys, tmp_path, mixture, runner):
  from kmlm_jax.kg.sample import KMLM_LANGUAGES
  pattern = _bad_text(tmp_path, KMLM_LANGUAGES)
  line = check(capsys, ["data", "cache", "--runner", runner, "--config", TINY,
                        f"data.mixture={mixture}", pattern,
                        f"data.cache_dir={tmp_path / 'cache'}"], "data",
               [f"{tmp_path / 'en.txt'}:2: not valid UTF-8", "data.skip_bad_lines=true"])
  assert "while running" not in line  # not wrapped by Beam
  assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- subprocesses


def _env(**changes) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
  return {**env, "JAX_PLATFORMS": "cpu", **changes}


def test_readme_mesh_example_on_one_device(tmp_path):
  """The README's `mesh.shape=2,2,2` on a 1-device machine: one line saying how many
  devices there are and how to simulate more; no work directory."""
  run = subprocess.run(
      [sys.executable, "-m", "kmlm_jax.cli", "train", "--config", "configs/tiny.py",
       "--workdir", str(tmp_path / "tiny"), "train.steps=200", "mesh.shape=2,2,2"],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert run.returncode == 2, run.stderr
  assert run.stderr.splitlines() == [run.stderr.strip()], run.stderr
  for needle in ("kmlm-jax train: error: mesh.shape (2, 2, 2) needs 8 devices",
                 "1 cpu device is available",
                 "XLA_FLAGS=--xla_force_host_platform_device_count=8"):
    assert needle in run.stderr
  assert not (tmp_path / "tiny").exists()


@pytest.mark.slow  # imports TensorFlow in a fresh process (10-25 s)
def test_tensorflow_probes_stay_off_stderr():
  """Importing TensorFlow through kmlm_jax (as the token cache and `kg build` do) and
  `kmlm-jax --help` print no CUDA probe lines on a CPU machine; a real error still shows."""
  code = ("import os\n"
          "from kmlm_jax.kg import records\n"
          "records._example_pb2()\n"
          "import tensorflow as tf\n"
          "assert tf.config.get_visible_devices('GPU') == []\n"
          "print(int(tf.reduce_sum(tf.constant([1, 2]))))\n"
          "from kmlm_jax.data.quiet_tf import filtered_stderr\n"
          "with filtered_stderr():\n"
          "  os.write(2, b'I0000 cudart_stub.cc:31] Could not find cuda drivers\\n'\n"
          "              b'E0000 real.cc:1] a real error\\n')\n")
  run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr
  assert run.stdout == "3\n"
  assert run.stderr == "E0000 real.cc:1] a real error\n"
  run = subprocess.run([sys.executable, "-m", "kmlm_jax.cli", "--help"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0 and run.stderr == ""
