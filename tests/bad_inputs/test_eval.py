"""`kmlm-jax eval` bad inputs beyond tests/bad_inputs/test_cli.py: config values out of range,
a model/tokenizer mismatch, inputs that do not fit the model's positions, malformed or empty
link-prediction splits, an --out that cannot be written. Each ends in one line naming the
file (and line) or key, exit 2 (1 for an unwritable --out), before any model is loaded,
and leaves no --out behind."""

from __future__ import annotations

import types

import pytest

from kmlm_jax.evaluation.progress import bar as progress_bar
from tests.bad_inputs import check
from tests.evaluation import tiny_run


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  t = tmp_path_factory.mktemp("bad_eval")
  e = types.SimpleNamespace(tmp=t, tok=tiny_run.wordpiece(t / "tok").parent)
  e.ckpt = tiny_run.config_only(t / "run" / "model")
  e.ckpt_small_vocab = tiny_run.config_only(t / "small_vocab" / "model", vocab_size=16)
  e.ckpt_short = tiny_run.config_only(t / "short" / "model", max_position_embeddings=8)
  e.corpus = tiny_run.corpus(t / "corpus")
  e.garbled_tok = t / "garbled" / "tokenizer.json"
  e.garbled_tok.parent.mkdir()
  e.garbled_tok.write_text('{"model": ')
  e.a_file = t / "a_file"
  e.a_file.write_text("keep")
  return e


def corpus(e, name: str, probes: str | None = None, **lp_files) -> str:
  """A corpus whose probes.jsonl (when given) and eval/lp/en.NAME.tsv files replace the good
  ones (text or bytes; None deletes the file)."""
  path = e.tmp / f"corpus_{name}"
  tiny_run.corpus(path)
  if probes is not None:
    (path / "eval" / "probes.jsonl").write_text(probes)
  for key, value in lp_files.items():
    target = path / "eval" / "lp" / f"en.{key}.tsv"
    if value is None:
      target.unlink()
    else:
      target.write_bytes(value.encode() if isinstance(value, str) else value)
  return str(path)


# case -> (config fields, needles); the config reads e.corpus with the WordPiece tokenizer,
# task probe, unless the fields say otherwise; "ckpt" and "out" pick other arguments.
CASES = {
    "model_smaller_than_tokenizer": lambda e: (
        {"ckpt": e.ckpt_small_vocab},
        ["small_vocab/model/model_config.json", "16 token embeddings", "tok", "27 ids"]),
    "garbled_tokenizer": lambda e: ({"vocab": str(e.garbled_tok)},
                                    ["vocab", "garbled/tokenizer.json"]),
    "max_probes_zero": lambda e: ({"max_probes": 0}, ["max_probes", "at least 1", "got 0"]),
    "max_probes_negative": lambda e: ({"max_probes": -3}, ["max_probes", "got -3"]),
    "lp_beams_zero": lambda e: ({"lp_beams": 0}, ["lp_beams", "at least 1"]),
    "finetune_steps_zero": lambda e: ({"finetune": {"steps": 0}},
                                      ["finetune.steps", "at least 1", "got 0"]),
    "finetune_batch_negative": lambda e: ({"finetune": {"batch_size": -8}},
                                          ["finetune.batch_size", "got -8"]),
    "finetune_eval_every_zero": lambda e: ({"finetune": {"eval_every": 0}},
                                           ["finetune.eval_every", "at least 1"]),
    "finetune_no_seeds": lambda e: ({"finetune": {"seeds": ()}},
                                    ["finetune.seeds", "non-empty"]),
    "finetune_negative_learning_rate": lambda e: ({"finetune": {"learning_rate": -1e-3}},
                                                  ["finetune.learning_rate", "> 0"]),
    "finetune_rows_beyond_positions": lambda e: (
        {"tasks": ("xlr",), "finetune": {"max_length": 100}},
        ["finetune.max_length", "100", "64 positions", "run/model/model_config.json"]),
    "probes_beyond_positions": lambda e: ({"ckpt": e.ckpt_short, "probe_max_tokens": 3},
                                          ["probe_max_tokens", "short/model/model_config.json",
                                           "has 8"]),
    "no_probes": lambda e: ({"corpus_dir": corpus(e, "no_probes", probes="\n")},
                            ["corpus_no_probes/eval/probes.jsonl", "no probes"]),
    "lp_empty_test_split": lambda e: ({"corpus_dir": corpus(e, "empty", test="\n"),
                                       "tasks": ("lp",)}, ["en.test.tsv", "no test queries"]),
    "lp_three_fields": lambda e: (
        {"corpus_dir": corpus(e, "three", test="France\tcapital\tParis\n"), "tasks": ("lp",)},
        ["en.test.tsv:1", "expected 4 tab-separated fields, got 3"]),
    "lp_empty_field": lambda e: (
        {"corpus_dir": corpus(e, "blank", test=tiny_run.LP_TEST + "France\t \tParis\ten\n"),
         "tasks": ("lp",)}, ["en.test.tsv:3", "field 2 is empty"]),
    "lp_answer_not_an_entity": lambda e: (
        {"corpus_dir": corpus(e, "rome", test="France\tcapital\tRome\ten\n"),
         "tasks": ("lp",)}, ["en.test.tsv:1", "'Rome'", "en.entities.tsv"]),
    "lp_duplicate_entities": lambda e: (
        {"corpus_dir": corpus(e, "dupes", entities=tiny_run.LP_ENTITIES + "Paris\ten\n"),
         "tasks": ("lp",)}, ["en.entities.tsv", "duplicate", "Paris"]),
    "lp_missing_filter_file": lambda e: (
        {"corpus_dir": corpus(e, "nofilter", filter=None), "tasks": ("lp",)},
        ["en.filter.tsv", "missing"]),
    "lp_not_utf8": lambda e: (
        {"corpus_dir": corpus(e, "latin1", test="Fran\xe7e\tcapital\tParis\ten\n".encode(
            "latin-1")), "tasks": ("lp",)}, ["en.test.tsv", "not UTF-8"]),
    "lp_tokenizer_without_prixlm_tokens": lambda e: ({"tasks": ("lp",)},
                                                     ["task lp", "tok", "[EOS]"]),
    "out_is_a_file": lambda e: ({"out": e.a_file}, ["--out", "a_file", "not a directory"]),
}


def _argv(e, name: str, fields: dict) -> list:
  fields = {"corpus_dir": str(e.corpus), "vocab": str(e.tok), "tasks": ("probe",),
            "probe_max_tokens": 1, **fields}
  ckpt, out = fields.pop("ckpt", e.ckpt), fields.pop("out", e.tmp / f"out_{name}")
  config = tiny_run.eval_config(e.tmp / f"eval_{name}.py", **fields)
  return ["eval", "--config", config, "--ckpt", ckpt, "--out", out]


@pytest.mark.parametrize("case", sorted(CASES))
def test_eval(capsys, env, case):
  fields, needles = CASES[case](env)
  check(capsys, _argv(env, case, fields), "eval", needles)
  assert not (env.tmp / f"out_{case}").exists()  # nothing written
  assert env.a_file.read_text() == "keep"


def test_read_only_out(capsys, env, tmpfs):
  check(capsys, _argv(env, "ro", {"out": tmpfs("ro", read_only=True) / "eval"}), "eval",
        ["--out", "ro/eval", "not writable"], code=1)


def test_full_disk_at_the_report_leaves_no_out(capsys, env, tmpfs, monkeypatch):
  """The run succeeds, then the report does not fit: one line, exit 1, no --out left."""
  monkeypatch.setattr("kmlm_jax.evaluation.progress.phase", lambda text: None)
  monkeypatch.setattr("kmlm_jax.evaluation.progress.bar",
                      lambda *a, **k: progress_bar(*a, **{**k, "disable": True}))
  ckpt = tiny_run.checkpoint(env.tmp / "full" / "model")
  out = tmpfs("full", size="8k") / "eval"
  check(capsys, _argv(env, "full", {"ckpt": ckpt, "out": out}), "eval",
        ["--out", "full/eval", "cannot be written", "No space left"], code=1)
  assert not out.exists()
