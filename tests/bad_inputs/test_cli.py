"""Bad inputs through every `kmlm-jax` subcommand (the first cases of the suite).

Each case calls `kmlm_jax.cli.main` in-process with one bad input and checks:
the return code (2: bad input), stderr is exactly one line
`kmlm-jax SUBCOMMAND: error: ...` naming the bad file / key / flag, and no
traceback. Nothing here builds a model, compiles or trains: the bad input
must be caught where it is read, before any of that.
"""

from __future__ import annotations

import dataclasses
import json
import types

import numpy as np
import pytest

from kmlm_jax.cli import main
from kmlm_jax.config import preset
from tests.bad_inputs import check

TINY = preset("tiny", vocab_size=64, hidden_size=8, num_heads=2, intermediate_size=16,
              num_layers=1, max_position_embeddings=16)
GOOD_PROBE = {"lang": "en", "relation": "P30", "template": "[X] is located in [Y].",
              "subject": "Afghanistan", "object": "Asia", "subject_id": "Q1", "object_id": "Q2"}


def _ckpt(path, model: dict | None = None, text: str | None = None):
  """A checkpoint directory holding only model_config.json (what the checks read)."""
  path.mkdir(parents=True)
  if text is None:
    text = json.dumps({"model": model or dataclasses.asdict(TINY), "metadata": {}})
  (path / "model_config.json").write_text(text)
  return path


def _config(path, body: str):
  path.write_text(body)
  return str(path)


def _eval_config(path, **fields):
  args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
  return _config(path, "from kmlm_jax.evaluation.run import EvalConfig\n"
                       f"def get_config():\n  return EvalConfig({args})\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """Files for the cases: configs, checkpoints (good and damaged), a corpus directory."""
  from kmlm_jax.kg.build import FORMAT
  t = tmp_path_factory.mktemp("cli_errors")
  e = types.SimpleNamespace(tmp=t)
  e.vocab = t / "tokenizer.json"
  e.vocab.write_text("{}")
  e.ckpt = _ckpt(t / "ckpt")
  (e.ckpt / "params").mkdir()  # no Orbax tree: restoring fails
  e.ckpt_garbled = _ckpt(t / "ckpt_garbled", text='{"model": {"flavour": "xlmr"')
  e.ckpt_unknown_field = _ckpt(t / "ckpt_unknown_field",
                               {**dataclasses.asdict(TINY), "num_experts": 8})
  e.ckpt_bad_type = _ckpt(t / "ckpt_bad_type", {**dataclasses.asdict(TINY), "num_heads": "two"})
  e.ckpt_zero_heads = _ckpt(t / "ckpt_zero_heads", {**dataclasses.asdict(TINY), "num_heads": 0})
  e.ckpt_bad_act = _ckpt(t / "ckpt_bad_act", {**dataclasses.asdict(TINY), "hidden_act": "swish9"})
  e.not_ckpt = t / "not_ckpt"
  e.not_ckpt.mkdir()

  def corpus(name, probes: str, xlr_train: str = ""):
    d = t / name
    (d / "eval" / "xlr").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"format": FORMAT, "languages": ["en"],
                                                 "streams": {}}))
    (d / "eval" / "probes.jsonl").write_text(probes)
    for split in ("train", "dev", "test"):
      (d / "eval" / "xlr" / f"{split}.jsonl").write_text(xlr_train if split == "train" else "")
    return d

  good = json.dumps(GOOD_PROBE) + "\n"
  e.corpus_bad_json = corpus("corpus_bad_json", good + '{"lang": "en", \n')
  e.corpus_bad_field = corpus("corpus_bad_field", good + json.dumps({**GOOD_PROBE,
                                                                    "template": "[X] only."}))
  e.corpus_bad_xlr = corpus("corpus_bad_xlr", good, json.dumps(
      {"id": "x", "split": "train", "lang": "en", "context": [], "question": "q?",
       "choices": ["a", "b"], "label": "a"}) + "\n")
  e.corpus_no_graph = corpus("corpus_no_graph", good)
  e.garbled_vocab = t / "garbled" / "tokenizer.json"
  e.garbled_vocab.parent.mkdir()
  e.garbled_vocab.write_text("{garbled")
  e.damaged_adapters = t / "damaged_adapters" / "adapters"
  e.damaged_adapters.mkdir(parents=True)
  (e.damaged_adapters / "params.npz").write_text("not a zip")
  (e.damaged_adapters / "adapter_config.json").write_text("{}")
  e.damaged_manifest = t / "damaged_manifest"
  e.damaged_manifest.mkdir()
  (e.damaged_manifest / "manifest.json").write_text('{"format": ')
  e.conll_bad = t / "bad.conll"
  e.conll_bad.write_text("Paris B-LOC\nis O O\n")
  e.conll_iob1 = t / "iob1.conll"
  e.conll_iob1.write_text("Paris I-LOC\n")
  e.relx_bad = t / "bad.relx"
  e.relx_bad.write_text("1\t<e1>Thom</e1> founded Radiohead\torg:founded_by(e2,e1)\n")
  e.triples_bad = t / "bad_triples.tsv"
  e.triples_bad.write_text("only one field\n")
  e.nonempty = t / "nonempty"
  e.nonempty.mkdir()
  (e.nonempty / "keep.txt").write_text("x")
  e.hf_no_config = t / "hf_no_config"
  e.hf_no_config.mkdir()
  e.hf_garbled = t / "hf_garbled"
  e.hf_garbled.mkdir()
  (e.hf_garbled / "config.json").write_text("{not json")

  e.cfg_garbled = _config(t / "garbled.py", "def get_config(:\n")
  e.cfg_no_get = _config(t / "no_get.py", "x = 1\n")
  e.cfg_raises = _config(t / "raises.py", "def get_config():\n  return {}['name']\n")
  e.cfg_bad_preset = _config(t / "bad_preset.py",
                             "from kmlm_jax.config import ExperimentConfig, preset\n"
                             "def get_config():\n"
                             "  return ExperimentConfig(name='x', model=preset('tiny-xl'))\n")
  e.cfg_train = _config(t / "train_ok.py",
                        "from kmlm_jax.config import ExperimentConfig, preset\n"
                        "def get_config():\n"
                        "  return ExperimentConfig(name='x', model=preset('tiny'))\n")

  def eval_cfg(name, **fields):
    fields.setdefault("corpus_dir", str(e.corpus_no_graph))
    fields.setdefault("vocab", str(e.vocab))
    return _eval_config(t / f"eval_{name}.py", **fields)

  e.eval_cfg = eval_cfg
  return e


# ---------------------------------------------------------------- eval

EVAL_CASES = {
    "missing_config": lambda e: (["--config", e.tmp / "nope.py", "--ckpt", e.ckpt],
                                 ["nope.py", "no such config file"]),
    "garbled_config": lambda e: (["--config", e.cfg_garbled, "--ckpt", e.ckpt],
                                 ["garbled.py", "SyntaxError"]),
    "wrong_config_type": lambda e: (["--config", e.cfg_train, "--ckpt", e.ckpt],
                                    ["train_ok.py", "not an EvalConfig"]),
    "missing_ckpt": lambda e: (["--config", e.eval_cfg("ok", tasks=("probe",)),
                                "--ckpt", e.tmp / "no_ckpt"],
                               ["no_ckpt", "no such checkpoint directory"]),
    "not_a_ckpt": lambda e: (["--config", e.eval_cfg("ok", tasks=("probe",)),
                              "--ckpt", e.not_ckpt], ["not_ckpt/model_config.json", "missing"]),
    "garbled_model_config": lambda e: (["--config", e.eval_cfg("ok", tasks=("probe",)),
                                        "--ckpt", e.ckpt_garbled],
                                       ["ckpt_garbled/model_config.json", "invalid JSON"]),
    "unknown_model_field": lambda e: (["--config", e.eval_cfg("ok", tasks=("probe",)),
                                       "--ckpt", e.ckpt_unknown_field],
                                      ["model_config.json", "num_experts"]),
    "bad_model_field_type": lambda e: (["--config", e.eval_cfg("ok", tasks=("probe",)),
                                        "--ckpt", e.ckpt_bad_type],
                                       ["model_config.json", "model.num_heads", "int"]),
    "zero_heads": lambda e: (["--config", e.eval_cfg("ok", tasks=("probe",)),
                              "--ckpt", e.ckpt_zero_heads], ["model.num_heads", "at least 1"]),
    "bad_activation": lambda e: (["--config", e.eval_cfg("ok", tasks=("probe",)),
                                  "--ckpt", e.ckpt_bad_act], ["model_config.json", "swish9"]),
    "bad_baseline": lambda e: (["--config", e.eval_cfg("ok", tasks=("probe",)),
                                "--ckpt", e.ckpt, "--baseline", e.tmp / "no_base"],
                               ["no_base", "no such checkpoint directory"]),
    "missing_vocab": lambda e: (["--config", e.eval_cfg("novocab", vocab=str(e.tmp / "v.json")),
                                 "--ckpt", e.ckpt], ["vocab", "v.json"]),
    "ckpt_without_tokenizer": lambda e: (["--config", e.eval_cfg("ckvocab", vocab=None),
                                          "--ckpt", e.ckpt], ["tokenizer", "vocab"]),
    "missing_corpus": lambda e: (["--config", e.eval_cfg("nocorpus",
                                                         corpus_dir=str(e.tmp / "no_corpus")),
                                  "--ckpt", e.ckpt], ["corpus_dir", "no_corpus/manifest.json"]),
    "unknown_task_flag": lambda e: (["--config", e.eval_cfg("ok"), "--ckpt", e.ckpt,
                                     "--tasks", "probe,qa"], ["--tasks", "qa"]),
    "empty_task_flag": lambda e: (["--config", e.eval_cfg("ok"), "--ckpt", e.ckpt,
                                   "--tasks", ","], ["--tasks"]),
    "unknown_task_in_config": lambda e: (["--config", e.eval_cfg("badtask", tasks=("xlr", "nli")),
                                          "--ckpt", e.ckpt], ["eval_badtask.py", "tasks", "nli"]),
    "tasks_as_string": lambda e: (["--config", e.eval_cfg("tstr", tasks="xlr"), "--ckpt", e.ckpt],
                                  ["eval_tstr.py", "tasks", "string"]),
    "bad_max_probes": lambda e: (["--config", e.eval_cfg("maxp", max_probes="ten"),
                                  "--ckpt", e.ckpt], ["eval_maxp.py", "max_probes", "ten"]),
    "bad_probe_method": lambda e: (["--config", e.eval_cfg("method", probe_method="greedy"),
                                    "--ckpt", e.ckpt], ["eval_method.py", "probe_method"]),
    "probes_bad_json": lambda e: (["--config", e.eval_cfg(
        "pj", corpus_dir=str(e.corpus_bad_json), tasks=("probe",)), "--ckpt", e.ckpt],
        ["corpus_bad_json/eval/probes.jsonl:2", "invalid JSON"]),
    "probes_bad_template": lambda e: (["--config", e.eval_cfg(
        "pt", corpus_dir=str(e.corpus_bad_field), tasks=("probe",)), "--ckpt", e.ckpt],
        ["probes.jsonl:2", "field 'template'", "[Y]"]),
    "probe_rank_without_graph": lambda e: (["--config", e.eval_cfg(
        "pr", tasks=("probe_rank",)), "--ckpt", e.ckpt], ["graph.npz", "probe_rank"]),
    "xlr_bad_label": lambda e: (["--config", e.eval_cfg(
        "xl", corpus_dir=str(e.corpus_bad_xlr), tasks=("xlr",)), "--ckpt", e.ckpt],
        ["xlr/train.jsonl:1", "field 'label'"]),
    "xlr_no_english": lambda e: (["--config", e.eval_cfg("xe", tasks=("xlr",)), "--ckpt", e.ckpt],
                                 ["xlr/train.jsonl", "English"]),
    "ner_files_missing_in_config": lambda e: (["--config", e.eval_cfg("ner0", tasks=("ner",)),
                                               "--ckpt", e.ckpt], ["ner_train", "ner_test"]),
    "ner_file_not_found": lambda e: (["--config", e.eval_cfg(
        "ner1", tasks=("ner",), ner_train=str(e.conll_bad), ner_dev=str(e.conll_bad),
        ner_test=(("de", str(e.tmp / "de.conll")),)), "--ckpt", e.ckpt],
        ["ner_test[de]", "de.conll"]),
    "ner_bad_columns": lambda e: (["--config", e.eval_cfg(
        "ner2", tasks=("ner",), ner_train=str(e.conll_bad), ner_dev=str(e.conll_bad),
        ner_test=(("de", str(e.conll_bad)),)), "--ckpt", e.ckpt],
        ["bad.conll:2", "columns"]),
    "ner_iob1_as_iob2": lambda e: (["--config", e.eval_cfg(
        "ner3", tasks=("ner",), ner_train=str(e.conll_iob1), ner_dev=str(e.conll_iob1),
        ner_test=(("de", str(e.conll_iob1)),)), "--ckpt", e.ckpt],
        ["iob1.conll:1", "I-LOC"]),
    "ner_bad_scheme": lambda e: (["--config", e.eval_cfg("ner4", ner_scheme="bio"),
                                  "--ckpt", e.ckpt], ["eval_ner4.py", "ner_scheme", "bio"]),
    "relx_no_e2": lambda e: (["--config", e.eval_cfg(
        "relx", tasks=("relx",), relx_train=str(e.relx_bad), relx_dev=str(e.relx_bad),
        relx_test=(("de", str(e.relx_bad)),)), "--ckpt", e.ckpt],
        ["bad.relx:1", "field 'sentence'", "e2"]),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_eval(capsys, env, case):
  argv, needles = EVAL_CASES[case](env)
  check(capsys, ["eval", *argv, "--out", env.tmp / f"out_{case}"], "eval", needles)
  assert not (env.tmp / f"out_{case}").exists()  # nothing written


# ---------------------------------------------------------------- train and data cache

CONFIG_CASES = {
    "missing_config": lambda e: ([e.tmp / "nope.py"], ["nope.py", "no such config file"]),
    "garbled_config": lambda e: ([e.cfg_garbled], ["garbled.py", "line 1"]),
    "no_get_config": lambda e: ([e.cfg_no_get], ["no_get.py", "get_config"]),
    "get_config_raises": lambda e: ([e.cfg_raises], ["raises.py", "KeyError", "name"]),
    "unknown_preset": lambda e: ([e.cfg_bad_preset], ["bad_preset.py", "tiny-xl"]),
    "unknown_key": lambda e: ([e.cfg_train, "train.stepz=3"], ["train_ok.py", "train.stepz"]),
    "unknown_section": lambda e: ([e.cfg_train, "optim.lr=3"], ["optim.lr"]),
    "bad_int": lambda e: ([e.cfg_train, "train.steps=ten"], ["train.steps", "ten"]),
    "bad_bool": lambda e: ([e.cfg_train, "data.pack=maybe"], ["data.pack", "maybe"]),
    "not_key_value": lambda e: ([e.cfg_train, "train.steps"], ["train.steps", "key=value"]),
    "bad_model_value": lambda e: ([e.cfg_train, "model.num_heads=3"], ["train_ok.py",
                                                                       "num_heads"]),
    "unknown_mixture": lambda e: ([e.cfg_train, "data.mixture=kmlm_max"], ["data.mixture",
                                                                           "kmlm_max"]),
    "missing_corpus_dir": lambda e: ([e.cfg_train, f"data.corpus_dir={e.tmp / 'no_corpus'}"],
                                     ["data.corpus_dir", "no_corpus/manifest.json"]),
    "damaged_corpus_manifest": lambda e: ([e.cfg_train, f"data.corpus_dir={e.damaged_manifest}"],
                                          ["damaged_manifest/manifest.json", "invalid JSON"]),
    "garbled_vocab": lambda e: ([e.cfg_train, f"data.vocab={e.garbled_vocab}"],
                                ["garbled/tokenizer.json", "not a tokenizer.json"]),
    "missing_vocab": lambda e: ([e.cfg_train, f"data.vocab={e.tmp / 'no_vocab.json'}"],
                                ["data.vocab", "no_vocab.json"]),
    "bad_text_pattern": lambda e: ([e.cfg_train, "data.text_pattern=/data/{language}.txt"],
                                   ["data.text_pattern", "{language}"]),
}
TRAIN_ONLY = {
    "missing_init_from": lambda e: ([e.cfg_train, f"init_from={e.tmp / 'no_ckpt'}"],
                                    ["init_from", "no_ckpt"]),
    "damaged_init_from": lambda e: ([e.cfg_train, f"init_from={e.ckpt_garbled}"],
                                    ["init_from", "ckpt_garbled/model_config.json"]),
}


@pytest.mark.parametrize("case", sorted({**CONFIG_CASES, **TRAIN_ONLY}))
def test_train(capsys, env, case, tmp_path):
  (config, *overrides), needles = {**CONFIG_CASES, **TRAIN_ONLY}[case](env)
  check(capsys, ["train", "--config", config, "--workdir", tmp_path / "wd", *overrides],
        "train", needles)
  assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_data_cache(capsys, env, case, tmp_path):
  (config, *overrides), needles = CONFIG_CASES[case](env)
  check(capsys, ["data", "cache", "--config", config, f"data.cache_dir={tmp_path / 'c'}",
                 *overrides], "data", needles)
  assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------- adapters

ADAPTERS_CASES = {
    "missing_config": lambda e: (["train", "--config", e.tmp / "nope.py"], ["nope.py"]),
    "wrong_config_type": lambda e: (["eval", "--config", e.cfg_train],
                                    ["train_ok.py", "AdapterExperimentConfig"]),
    "unknown_key": lambda e: (["train", "--config", "configs/adapters_tiny.py",
                               "train.adapter_stepz=3"], ["adapters_tiny.py",
                                                          "train.adapter_stepz"]),
    "bad_pooling": lambda e: (["train", "--config", "configs/adapters_tiny.py",
                               "data.pooling=max"], ["adapters_tiny.py", "data.pooling", "max"]),
    "bad_stage": lambda e: (["eval", "--config", "configs/adapters_tiny.py",
                             "train.stages=ep,xx"], ["adapters_tiny.py", "train.stages", "xx"]),
    "export_damaged": lambda e: (["export", "--config", "configs/adapters_tiny.py",
                                  "--workdir", e.damaged_adapters.parent, "--to", e.tmp / "exp2"],
                                 ["damaged_adapters/adapters", "damaged adapters directory"]),
    "export_untrained": lambda e: (["export", "--config", "configs/adapters_tiny.py",
                                    "--workdir", e.tmp / "no_workdir", "--to", e.tmp / "exp"],
                                   ["no_workdir/adapters/params.npz", "adapters train"]),
}


@pytest.mark.parametrize("case", sorted(ADAPTERS_CASES))
def test_adapters(capsys, env, case):
  argv, needles = ADAPTERS_CASES[case](env)
  check(capsys, ["adapters", *argv], "adapters", needles)


# ---------------------------------------------------------------- convert and init

CONVERT_CASES = {
    "missing_ckpt": lambda e: (["--from", e.tmp / "no_ckpt", "--to-hf", e.tmp / "hf_out"],
                               ["no_ckpt", "no such checkpoint directory"]),
    "garbled_model_config": lambda e: (["--from", e.ckpt_garbled, "--to-hf", e.tmp / "hf_out"],
                                       ["ckpt_garbled/model_config.json"]),
    "bad_model_field": lambda e: (["--from", e.ckpt_bad_type, "--to-hf", e.tmp / "hf_out"],
                                  ["model.num_heads"]),
    "damaged_params": lambda e: (["--from", e.ckpt, "--to-hf", e.tmp / "hf_out"],
                                 ["ckpt/params", "cannot restore"]),
    "existing_destination": lambda e: (["--from", e.ckpt, "--to-hf", e.nonempty],
                                       ["nonempty", "--overwrite"]),
    "missing_hf_dir": lambda e: (["--from-hf", e.tmp / "no_hf", "--to", e.tmp / "ck_out"],
                                 ["no_hf", "no such directory"]),
    "hf_without_config": lambda e: (["--from-hf", e.hf_no_config, "--to", e.tmp / "ck_out"],
                                    ["hf_no_config/config.json", "missing"]),
    "hf_garbled_config": lambda e: (["--from-hf", e.hf_garbled, "--to", e.tmp / "ck_out"],
                                    ["hf_garbled/config.json", "invalid JSON"]),
    "from_hf_to_hf": lambda e: (["--from-hf", e.hf_garbled, "--to-hf", e.tmp / "x"],
                                ["--from-hf", "--to CKPT"]),
    "from_to": lambda e: (["--from", e.ckpt, "--to", e.tmp / "x"], ["--from", "--to-hf"]),
}


@pytest.mark.parametrize("case", sorted(CONVERT_CASES))
def test_convert(capsys, env, case):
  argv, needles = CONVERT_CASES[case](env)
  check(capsys, ["convert", *argv], "convert", needles)
  assert not (env.tmp / "hf_out").exists() and not (env.tmp / "ck_out").exists()


@pytest.mark.parametrize("case", ["unknown_preset", "existing_destination", "destination_file"])
def test_init(capsys, env, case):
  if case == "unknown_preset":
    check(capsys, ["init", "--preset", "xlmr-huge", "--to", env.tmp / "init_out"], "init",
          ["--preset", "xlmr-huge", "xlmr-base"])
    assert not (env.tmp / "init_out").exists()
  elif case == "existing_destination":
    check(capsys, ["init", "--preset", "tiny", "--to", env.nonempty], "init",
          ["nonempty", "--overwrite"])
    assert (env.nonempty / "keep.txt").exists()
  else:
    check(capsys, ["init", "--preset", "tiny", "--to", env.vocab, "--overwrite"], "init",
          ["tokenizer.json", "not a directory"])
    assert env.vocab.is_file()


# ---------------------------------------------------------------- kg

KG_CASES = {
    "stats_missing_dir": lambda e: (["stats", e.tmp / "no_kg"], ["no_kg/manifest.json"]),
    "stats_damaged_manifest": lambda e: (["stats", e.damaged_manifest],
                                         ["damaged_manifest/manifest.json", "invalid JSON"]),
    "stats_incomplete_manifest": lambda e: (["stats", e.corpus_no_graph],
                                            ["corpus_no_graph/manifest.json", "damaged"]),
    "empty_langs": lambda e: (["build", "--sample", "--langs", ",,", "--out", e.tmp / "kg"],
                              ["--langs", "no language codes"]),
    "unknown_lang": lambda e: (["build", "--sample", "--langs", "en,xx", "--out", e.tmp / "kg"],
                               ["--langs", "'xx'"]),
    "misspelt_lang": lambda e: (["build", "--sample", "--langs", "EN", "--out", e.tmp / "kg"],
                                ["--langs", "'EN'", "'en'"]),
    "wikidata_without_langs": lambda e: (["build", "--wikidata-dump", e.triples_bad,
                                          "--out", e.tmp / "kg"], ["--langs"]),
    "missing_dump": lambda e: (["build", "--wikidata-dump", e.tmp / "dump.json", "--langs", "en",
                                "--out", e.tmp / "kg"], ["--wikidata-dump", "dump.json"]),
    "missing_whitelist": lambda e: (["build", "--sample", "--entity-whitelist",
                                     e.tmp / "ents.txt", "--out", e.tmp / "kg"],
                                    ["--entity-whitelist", "ents.txt"]),
    "entities_without_triples": lambda e: (["build", "--sample", "--entities-tsv", e.triples_bad,
                                            "--out", e.tmp / "kg"], ["--entities-tsv"]),
    "zero_shards": lambda e: (["build", "--sample", "--num-shards", "0", "--out", e.tmp / "kg"],
                              ["--num-shards"]),
    "existing_out": lambda e: (["build", "--sample", "--out", e.nonempty],
                               ["nonempty", "--overwrite"]),
    "out_is_a_file": lambda e: (["build", "--sample", "--out", e.vocab, "--overwrite"],
                                ["--out", "tokenizer.json", "not a directory"]),
    "malformed_triples": lambda e: (["build", "--triples-tsv", e.triples_bad,
                                     "--out", e.tmp / "kg"], ["bad_triples.tsv:1", "fields"]),
}


@pytest.mark.parametrize("case", sorted(KG_CASES))
def test_kg(capsys, env, case):
  argv, needles = KG_CASES[case](env)
  check(capsys, ["kg", *argv], "kg", needles)
  assert not (env.tmp / "kg").exists()


# ---------------------------------------------------------------- argparse and messages

def test_bad_flags_are_argparse_usage_errors(capsys):
  with pytest.raises(SystemExit) as e:
    main(["train"])  # --config missing
  assert e.value.code == 2
  assert "the following arguments are required: --config" in capsys.readouterr().err


def test_multiline_messages_become_one_line(capsys, tmp_path):
  config = _config(tmp_path / "multi.py", "def get_config():\n  raise ValueError('a\\nb')\n")
  line = check(capsys, ["train", "--config", config], "train", ["multi.py", "a b"])
  assert "\n" not in line


# ---------------------------------------------------------------- readers and trie

def test_reader_on_a_directory_is_a_reader_error(tmp_path):
  from kmlm_jax.evaluation import readers
  for read in (readers.read_conll, readers.read_relx, readers.read_probes):
    with pytest.raises(readers.ReaderError, match="cannot be read"):
      read(tmp_path)


def test_damaged_trie_file(tmp_path):
  from kmlm_jax.decoding.trie import Trie, TrieError, build_trie, build_trie_cached
  trie = build_trie([[1, 2], [1, 3]], 0)
  path = tmp_path / "t.npz"
  trie.save(path)
  path.write_bytes(path.read_bytes()[:40])
  with pytest.raises(TrieError, match="damaged trie file"):
    Trie.load(path)
  with pytest.raises(TrieError, match="no such trie file"):
    Trie.load(tmp_path / "none.npz")
  with pytest.raises(TrieError, match="no entity names"):
    build_trie([], 0)
  # A damaged cache entry is rebuilt, not fatal.
  cached = build_trie_cached([[1, 2], [1, 3]], 0, tmp_path / "cache")
  (entry,) = (tmp_path / "cache").iterdir()
  entry.write_bytes(b"garbage")
  again = build_trie_cached([[1, 2], [1, 3]], 0, tmp_path / "cache")
  np.testing.assert_array_equal(again.child_token, cached.child_token)
