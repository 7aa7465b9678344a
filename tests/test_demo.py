"""The demo's code path end to end, with a few steps and evaluation items."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_quick_demo(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "kmlm_jax.demo", "--out", str(tmp_path / "demo"),
                         "--steps", "8", "--batch-size", "8", "--quick"],
                        capture_output=True, text=True, cwd=ROOT, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = proc.stdout.strip().splitlines()[-1]
  assert last.startswith("loss_falls=true"), last
  results = json.loads((tmp_path / "demo" / "results.json").read_text())
  for run in ("KMLM-Mix", "MLM-only"):
    ev = results["results"][run]["eval"]
    assert set(ev["stream_accuracy"]) == {"mlm", "knowledge (code-switched)",
                                          "knowledge (parallel)", "reasoning"}
    assert 0 <= ev["probes"]["avg"] <= 1 and 0 <= ev["xlr"]["avg"] <= 1
  # The exported directory loads in transformers with its trimmed tokenizer.
  import transformers
  hf = tmp_path / "demo" / "hf"
  tok = transformers.AutoTokenizer.from_pretrained(hf)
  model = transformers.AutoModelForMaskedLM.from_pretrained(hf)
  assert model.config.vocab_size == len(tok) == results["vocab_size"]
  assert "| XLR test" in (tmp_path / "demo" / "results.md").read_text()

  # `kmlm-jax eval` on the demo's two checkpoints: tables and plots in one command.
  config = tmp_path / "eval_cfg.py"
  config.write_text(f"""
from kmlm_jax.evaluation.finetune import FinetuneConfig
from kmlm_jax.evaluation.run import EvalConfig
def get_config():
  return EvalConfig(corpus_dir="{tmp_path / 'demo' / 'kg'}",
                    vocab="{tmp_path / 'demo' / 'vocab' / 'tokenizer.json'}",
                    tasks=("xlr", "probe", "probe_rank"),
                    finetune=FinetuneConfig(steps=6, batch_size=16, learning_rate=1e-3,
                                            warmup_steps=1, eval_every=3, seeds=(0, 1)),
                    probe_max_tokens=2, max_probes=40)
""")
  proc = subprocess.run([sys.executable, "-m", "kmlm_jax.cli", "eval", "--config", str(config),
                         "--ckpt", str(tmp_path / "demo" / "KMLM-Mix" / "model"),
                         "--baseline", str(tmp_path / "demo" / "MLM-only" / "model"),
                         "--out", str(tmp_path / "eval")],
                        capture_output=True, text=True, cwd=ROOT, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  md = (tmp_path / "eval" / "results.md").read_text()
  assert "| KMLM-Mix |" in md and "| MLM-only |" in md and "avg_tgt | delta" in md
  for png in ("xlr.png", "probe.png", "probe_rank.png", "training_curves.png"):
    assert (tmp_path / "eval" / "plots" / png).stat().st_size > 5000, png
  results = json.loads((tmp_path / "eval" / "results.json").read_text())
  assert len(results["results"]["KMLM-Mix"]["xlr"]["per_seed"]["en"]) == 2
