"""`kmlm-jax train --dry-run`: compiles the step from abstract inputs, reads no data, checks
the memory budget."""

import re
from pathlib import Path

import jax
import pytest

from kmlm_jax import cli
from kmlm_jax.experiment import load_config
from kmlm_jax.model_checkpoint import abstract_params
from kmlm_jax.training import data as data_lib
from kmlm_jax.training import dry_run

ROOT = Path(__file__).resolve().parents[2]
# The tiny config with a small vocabulary; paths that do not exist prove nothing is read.
TINY = [f"--config={ROOT / 'configs/tiny.py'}", "--dry-run", "model.vocab_size=1000",
        "data.corpus_dir=/nonexistent/corpus", "data.cache_dir=/nonexistent/cache"]


@pytest.fixture(autouse=True)
def no_data(monkeypatch):
  """Any read of the training input fails the test."""
  def fail(*args, **kwargs):
    raise AssertionError("the dry run read the training input")
  for name in ("check_input", "prepare_input", "make_batches", "build_cache"):
    monkeypatch.setattr(data_lib, name, fail)


def _memory(out: str) -> dict:
  """{row: bytes} of the memory table."""
  rows = re.findall(r"^  (\w[\w ]*?) +[\d.]+ +([\d,]+)$", out, re.M)
  return {name: int(value.replace(",", "")) for name, value in rows}


def test_dry_run_prints_parameters_flops_and_memory(capsys):
  assert cli.main(["train", *TINY]) == 0
  out = capsys.readouterr().out
  assert "8 x cpu (mesh data=8 x fsdp=1 x tensor=1)" in out
  params = int(re.search(r"parameters +([\d,]+)", out)[1].replace(",", ""))
  config = load_config(ROOT / "configs/tiny.py", ["model.vocab_size=1000"])
  assert params == sum(x.size for x in jax.tree.leaves(abstract_params(config.model)))
  assert re.search(r"FLOPs per step +[\d.e+]+ analytic", out)
  memory = _memory(out)
  assert set(memory) == {"arguments", "outputs", "aliased", "temps", "generated code", "total"}
  # Parameters and both Adam moments, fp32, replicated over the 8 data-parallel devices.
  assert memory["arguments"] == pytest.approx(params * 12, rel=0.01)
  assert memory["total"] > memory["arguments"]
  assert "no memory budget known" in out


def test_batch_over_budget_exits_2_with_the_figure(capsys):
  code = cli.main(["train", *TINY, "data.batch_size=64", "--memory-budget=0.001"])
  captured = capsys.readouterr()
  assert code == 2
  total = _memory(captured.out)["total"] / 2**30
  line = captured.err.strip().splitlines()[-1]
  assert re.fullmatch(r"kmlm-jax train: error: does not fit: the train step needs "
                      rf"{total:.3f} GiB per device > budget 0\.001 GiB .*", line), line


def test_budget_needs_dry_run(capsys):
  assert cli.main(["train", f"--config={ROOT / 'configs/tiny.py'}", "--memory-budget=1"]) == 2
  assert "--memory-budget needs --dry-run" in capsys.readouterr().err


def test_remat_lowers_the_temps():
  temps = {}
  for policy in ("none", "full"):  # tiny.py's own remat_policy is none
    config = load_config(ROOT / "configs/tiny.py", ["model.vocab_size=1000"] + (
        [f"model.remat_policy={policy}"] if policy != "none" else []))
    temps[policy] = dry_run.memory_per_device(dry_run.compile_step(config)[1])["temps"]
  assert temps["full"] < temps["none"], temps


@pytest.mark.slow
def test_xlmr_large_on_8_cpu_devices(capsys):
  """The paper's xlmr-large config as it is (9,600 rows, 4 micro-batches, FSDP over 8)."""
  assert cli.main(["train", f"--config={ROOT / 'configs/xlmr_large_kmlm_cs.py'}", "--dry-run",
                   "data.cache_dir=/nonexistent/cache"]) == 0
  out = capsys.readouterr().out
  assert "(mesh data=1 x fsdp=8 x tensor=1)" in out
  assert re.search(r"parameters +560,1\d\d,\d{3}", out)  # XLM-R large with the MLM head
  memory = _memory(out)
  assert memory["arguments"] == pytest.approx(560e6 * 12 / 8, rel=0.02)  # FSDP
  assert memory["temps"] > 2**30
