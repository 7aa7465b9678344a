"""`kmlm-jax adapters` bad inputs beyond tests/bad_inputs/test_cli.py: numbers out of range in
the config (checked before anything is built), a tokenizer larger than the model, sequences
beyond its positions, init_from faults, adapters trained on another architecture, garbled
T-REx and alignment files. Each ends in one line naming the key or the file (and line),
exit 2, and leaves no workdir (or, for eval, no WORKDIR/eval) behind."""

from __future__ import annotations

import dataclasses
import json
import shutil
import types

import numpy as np
import pytest

from kmlm_jax import fileio
from kmlm_jax.adapters import train as train_lib
from tests.bad_inputs import check
from tests.evaluation import tiny_run

CONFIG = """
from kmlm_jax.adapters.config import (AdapterDataConfig, AdapterExperimentConfig,
                                      AdapterTrainConfig)
from kmlm_jax.config import MeshConfig
from tests.evaluation.tiny_run import model
def get_config():
  return AdapterExperimentConfig(
      name="bad", model=model(vocab_size=64, max_position_embeddings=40, use_mlm_head=False),
      data=AdapterDataConfig(corpus_dir={corpus!r}, vocab={vocab!r}, seq_length=16),
      train=AdapterTrainConfig(adapter_steps=2, fusion_steps=2, batch_size=8),
      mesh=MeshConfig(shape=(-1, 1, 1)))
"""


@pytest.fixture(autouse=True)
def no_phase_lines(monkeypatch):
  """A phase line may precede an input's error (reading T-REx is a phase); `check` wants the
  error line alone on stderr."""
  monkeypatch.setattr("kmlm_jax.evaluation.progress.phase", lambda text: None)


def _corpus_copy(kg, target, path: str, text: str):
  shutil.copytree(kg, target)
  (target / path).write_text(text)
  return target


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  t = tmp_path_factory.mktemp("bad_adapters")
  e = types.SimpleNamespace(tmp=t, kg=t / "kg", tok=tiny_run.wordpiece(t / "tok").parent)
  train_lib.build_sample_corpus(e.kg, streams=False)
  e.config = t / "adapters_bad.py"
  e.config.write_text(CONFIG.format(corpus=str(e.kg), vocab=str(e.tok)))
  e.kg_bad_align = _corpus_copy(e.kg, t / "kg_bad_align", "eval/alignment/de.dev.jsonl",
                                '{"id": "Q9000003", "en": "Angola", "de": \n')
  e.kg_unknown_id = _corpus_copy(e.kg, t / "kg_unknown_id", "eval/alignment/de.test.jsonl",
                                 json.dumps({"id": "Q404", "en": "Nowhere", "de": "Nirgends"}))
  e.kg_label_type = _corpus_copy(e.kg, t / "kg_label_type", "eval/alignment/fr.dev.jsonl",
                                 json.dumps({"id": "Q9000003", "en": "Angola", "fr": 7}))
  e.trex_garbled = t / "trex.jsonl"
  e.trex_garbled.write_text('{"text": "A.", "triples": []}\n{"text": \n')
  e.trex_no_text = t / "trex_no_text.jsonl"
  e.trex_no_text.write_text('{"triples": []}\n')
  e.ckpt16 = tiny_run.checkpoint(t / "ckpt16" / "model", vocab_size=64)
  e.ckpt_small_vocab = tiny_run.config_only(t / "small_vocab", vocab_size=16)
  e.ckpt_garbled_tok = tiny_run.config_only(t / "garbled_tok", vocab_size=64)
  (e.ckpt_garbled_tok / "tokenizer").mkdir()
  (e.ckpt_garbled_tok / "tokenizer" / "tokenizer.json").write_text('{"model": ')
  # Adapters trained on a width-32 base (evaluated below with the width-16 ckpt16).
  e.trained32 = t / "trained32"
  (e.trained32 / "adapters").mkdir(parents=True)
  fileio.save_npz(e.trained32 / "adapters" / "params.npz",
                  {"adapters.down_kernel": np.zeros((1, 4, 32, 2), np.float32)})
  (e.trained32 / "adapters" / "adapter_config.json").write_text(json.dumps(
      {"model": dataclasses.asdict(tiny_run.model(vocab_size=64, hidden_size=32)),
       "base_fingerprint": "x"}))
  return e


# case -> (subcommand, overrides, needles, workdir: None = a fresh one per case)
CASES = {
    "adapter_steps_zero": lambda e: ("train", ["train.adapter_steps=0"],
                                     ["train.adapter_steps", "integer >= 1", "got 0"]),
    "fusion_steps_negative": lambda e: ("train", ["train.fusion_steps=-5"],
                                        ["train.fusion_steps", "got -5"]),
    "fusion_value_l2_negative": lambda e: ("train", ["train.fusion_value_l2=-1"],
                                           ["train.fusion_value_l2", "number >= 0"]),
    "batch_size_zero": lambda e: ("train", ["train.batch_size=0"],
                                  ["train.batch_size", "integer >= 1"]),
    "batch_not_split_over_devices": lambda e: ("train", ["train.batch_size=4"],
                                               ["train.batch_size", "multiple of"]),
    "eval_batch_size_negative": lambda e: ("eval", ["eval.batch_size=-1"],
                                           ["eval.batch_size", "integer >= 1"]),
    "log_every_zero": lambda e: ("train", ["train.log_every=0"], ["train.log_every"]),
    "warmup_negative": lambda e: ("train", ["train.warmup_steps=-1"],
                                  ["train.warmup_steps", "integer >= 0"]),
    "learning_rate_negative": lambda e: ("train", ["train.learning_rate=-0.1"],
                                         ["train.learning_rate", "number > 0"]),
    "temperature_zero": lambda e: ("train", ["train.temperature=0"],
                                   ["train.temperature", "number > 0"]),
    "seq_length_two": lambda e: ("train", ["data.seq_length=2"],
                                 ["data.seq_length", "integer >= 3"]),
    "seq_length_beyond_positions": lambda e: (
        "train", ["data.seq_length=64"],
        ["data.seq_length", "64", "40 positions", "the config's model"]),
    "unknown_eval_split": lambda e: ("eval", ["eval.split=validation"],
                                     ["eval.split", "'validation'", "test"]),
    "tokenizer_larger_than_model": lambda e: ("train", [f"init_from={e.ckpt_small_vocab}"],
                                              ["tokenizer", "27 ids", "small_vocab",
                                               "only 16 token embeddings"]),
    "init_from_missing": lambda e: ("train", [f"init_from={e.tmp / 'no_ckpt'}"],
                                    ["init_from", "no_ckpt", "no such checkpoint directory"]),
    "init_from_garbled_tokenizer": lambda e: (
        "train", [f"init_from={e.ckpt_garbled_tok}", "data.vocab=none"],
        ["init_from", "tokenizer cannot be read"]),
    "eval_on_another_architecture": lambda e: (
        "eval", [f"init_from={e.ckpt16}"],
        ["trained32/adapters/adapter_config.json", "another architecture",
         "hidden_size=32 (this run's base: 16)"], e.trained32),
    "garbled_trex_line": lambda e: ("train", [f"data.trex={e.trex_garbled}"],
                                    ["trex.jsonl:2", "invalid JSON"]),
    "trex_without_text": lambda e: ("train", [f"data.trex={e.trex_no_text}"],
                                    ["trex_no_text.jsonl:1", "'text'"]),
    "trex_pattern_matches_nothing": lambda e: ("train", [f"data.trex={e.tmp / 'none_*.json'}"],
                                               ["none_*.json", "no T-REx file matches"]),
    "garbled_alignment_row": lambda e: ("train", [f"data.corpus_dir={e.kg_bad_align}"],
                                        ["alignment/de.dev.jsonl:1", "bad alignment row"]),
    "alignment_unknown_entity": lambda e: ("train", [f"data.corpus_dir={e.kg_unknown_id}"],
                                           ["alignment/de.test.jsonl:1", "field 'id'", "Q404"]),
    "alignment_label_not_text": lambda e: ("train", [f"data.corpus_dir={e.kg_label_type}"],
                                           ["alignment/fr.dev.jsonl:1", "field 'fr'",
                                            "non-empty string"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_adapters(capsys, env, case):
  command, overrides, needles, *workdir = CASES[case](env)
  workdir = workdir[0] if workdir else env.tmp / f"wd_{case}"
  before = sorted(p.name for p in workdir.rglob("*")) if workdir.exists() else None
  check(capsys, ["adapters", command, "--config", env.config, "--workdir", workdir,
                 *overrides], "adapters", needles)
  after = sorted(p.name for p in workdir.rglob("*")) if workdir.exists() else None
  assert after == before  # nothing written
