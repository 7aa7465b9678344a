"""`kmlm-jax eval` is never silent: each phase prints a line on stderr when it starts
(compiles included) and loops show a bar there; stdout keeps only the results."""

from __future__ import annotations

import json

import pytest

from kmlm_jax.cli import main
from tests.evaluation import tiny_run


def _run(capsys, tmp_path, ckpt, **fields) -> tuple[str, str]:
  config = tiny_run.eval_config(tmp_path / "eval_cfg.py", **fields)
  out = tmp_path / "out"
  assert main(["eval", "--config", str(config), "--ckpt", str(ckpt), "--out", str(out)]) == 0
  assert json.loads((out / "results.json").read_text())["tasks"] == list(fields["tasks"])
  assert not list(out.glob(".results.tmp-*"))
  return capsys.readouterr()


def _lines_in_order(text: str, starts: list[str]) -> None:
  lines = [l.strip() for l in text.replace("\r", "\n").splitlines()]
  at = 0
  for start in starts:
    found = [i for i, l in enumerate(lines) if i >= at and l.startswith(start)]
    assert found, (start, text)
    at = found[0] + 1


def test_probe_run_shows_its_phases(capsys, tmp_path):
  ckpt = tiny_run.checkpoint(tmp_path / "run" / "model")
  out, err = _run(capsys, tmp_path, ckpt, corpus_dir=str(tiny_run.corpus(tmp_path / "kg")),
                  vocab=str(tiny_run.wordpiece(tmp_path / "tok")), tasks=("probe",),
                  probe_max_tokens=2)
  assert out.startswith("### cloze probing accuracy (%)"), out  # the results, as before
  _lines_in_order(err, ["evaluating probe on 1 checkpoint(s)", f"loading checkpoint {ckpt}",
                        "probing 3 queries (independent decoding, 1 to 2 masks)",
                        "compiling the cloze model (during the first batch)",
                        "probing: 100%", "writing"])
  assert "probing 3 queries" not in out and "compiling" not in out


@pytest.fixture(scope="module")
def prixlm_tokenizer(tmp_path_factory):
  """A trimmed XLM-R tokenizer.json with the Prix-LM tokens (and [en])."""
  from kmlm_jax.assets import real_xlmr_tokenizer_json
  from kmlm_jax.text import prixlm
  from kmlm_jax.text.trim import trim_tokenizer_json
  from kmlm_jax.text.vocab import add_tokens_to_tokenizer_json
  t = tmp_path_factory.mktemp("prixlm_tok")
  texts = (tiny_run.LP_ENTITIES + tiny_run.LP_TEST + json.dumps(tiny_run.XLR)).split("\t")
  trim_tokenizer_json(real_xlmr_tokenizer_json(), texts, t / "trimmed.json")
  add_tokens_to_tokenizer_json(t / "trimmed.json", prixlm.added_tokens(["en"]),
                               t / "tokenizer.json")
  return t / "tokenizer.json"


@pytest.mark.slow
def test_xlr_and_link_prediction_show_their_phases(capsys, tmp_path, prixlm_tokenizer):
  from kmlm_jax.text.vocab import load_vocab
  size = load_vocab(str(prixlm_tokenizer)).vocab_size
  ckpt = tiny_run.checkpoint(tmp_path / "prixlm" / "model", flavour="xlmr", vocab_size=size,
                             pad_token_id=1, type_vocab_size=1)
  out, err = _run(capsys, tmp_path, ckpt, corpus_dir=str(tiny_run.corpus(tmp_path / "kg")),
                  vocab=str(prixlm_tokenizer), tasks=("xlr", "lp"), lp_beams=2,
                  finetune={"steps": 2, "batch_size": 8, "eval_every": 1, "seeds": (0, 1),
                            "max_length": 32, "warmup_steps": 0})
  assert "### XLR accuracy" in out and "### link prediction MRR" in out
  _lines_in_order(err, [
      "evaluating xlr, lp on 1 checkpoint(s)", f"loading checkpoint {ckpt}",
      "fine-tuning XLR seed 1/2 (seed 0, 2 steps)",
      "compiling the fine-tuning step (during the first step)", "testing XLR seed 1/2",
      "fine-tuning XLR seed 2/2 (seed 1, 2 steps)", "testing XLR seed 2/2",
      "link prediction: 2 queries in 1 languages",
      "link prediction en: 2 queries, 2 beams over 4 entities",
      "compiling the beam search (during the first query)", "link prediction en: 100%",
      "writing"])
