"""The demo's code path end to end, with a few steps and evaluation items."""

import json
import subprocess
import sys
from pathlib import Path

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
