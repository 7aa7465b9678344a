"""Released evaluation data through `kmlm-jax eval`: Prix-LM's link-prediction files
(tests/fixtures/released/prixlm/link_prediction, as luka-group/prix-lm lp.py reads them) and
KMLM's XLR files (tests/fixtures/released/xlr, the layout `kmlm_jax.kg.released` assumes)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kmlm_jax.errors import InputError
from kmlm_jax.kg import released
from tests.evaluation import tiny_run

FIXTURES = Path(__file__).parents[1] / "fixtures" / "released"
LP = FIXTURES / "prixlm" / "link_prediction"
XLR = FIXTURES / "xlr" / "logic"


def test_prixlm_splits_are_read_as_given():
  splits = released.read_prixlm_lp(LP)
  assert list(splits) == ["en", "de"]
  en = splits["en"]
  assert en.entities == ["France", "Paris", "Berlin", "Germany"]  # the repeat of Paris dropped
  assert en.queries == [("France", "capital", "Paris", 1), ("Germany", "capital", "Berlin", 2),
                        ("Germany", "shares border with", "France", 4),
                        ("Japan", "capital", "Tokyo", 5)]
  assert en.true_tails[("Germany", "shares border with")] == {"France", "Frankreich", "Paris"}
  assert en.notes == {"duplicate_entity_lines": 1, "answers_not_in_entities": 1}
  assert str(en.test_path).endswith("link_prediction/triples.txt")
  assert splits["de"].queries == [("Frankreich", "Hauptstadt", "Paris", 3)]
  assert list(released.read_prixlm_lp(LP, ["de"])) == ["de"]


def test_encoded_queries_exclude_other_true_tails_and_miss_unknown_answers(tmp_path):
  from kmlm_jax.evaluation import lp_eval, metrics
  from kmlm_jax.text import prixlm
  from kmlm_jax.text.vocab import add_tokens_to_tokenizer_json, default_vocab_path, load_vocab
  split = released.read_prixlm_lp(LP)["en"]
  tok = tmp_path / "tokenizer.json"
  add_tokens_to_tokenizer_json(default_vocab_path(), prixlm.added_tokens(["en", "de"]), tok)
  q = lp_eval.encode_split(split, load_vocab(str(tok)))
  assert q.answers.tolist() == [1, 2, 0, -1]  # Tokyo is no candidate: always a miss
  # (Germany, shares border with): Paris excluded (Frankreich is no English candidate).
  assert [sorted(e[e >= 0].tolist()) for e in q.exclude] == [[], [], [1], []]
  assert metrics.list_ranks(np.array([[1, 2], [0, 2], [1, 0], [0, 1]]), q.answers,
                            q.exclude).tolist() == [1, 2, 1, np.inf]


def test_prixlm_splits_from_the_repositorys_zips(tmp_path):
  for name in ("triples", "entities", "filtered"):
    with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as z:
      z.write(LP / f"{name}.txt", f"{name}.txt")
  got = released.read_prixlm_lp(tmp_path)
  assert {l: s.queries for l, s in got.items()} == {
      l: s.queries for l, s in released.read_prixlm_lp(LP).items()}
  assert str(got["en"].test_path).endswith("triples.zip:triples.txt")


@pytest.mark.parametrize("file, text, message", [
    ("triples", "France\tcapital\tParis\ten\nGermany\tcapital\tBerlin\n",
     r"triples\.txt:2: expected 4 tab-separated fields"),
    ("triples", "France\tcapital\tParis\ten\nGermany\t \tBerlin\ten\n",
     r"triples\.txt:2: field 'relation': empty"),
    ("entities", "France\ten\nParis\n", r"entities\.txt:2: expected 2"),
    ("filtered", "France\tcapital\tParis\ten\n\n\tcapital\tParis\ten\n",
     r"filtered\.txt:3: expected 4|filtered\.txt:3: field 'head'"),
    ("triples", "France\tcapital\tParis\ten\n\xff\n", r"triples\.txt:2: not UTF-8"),
])
def test_malformed_lp_lines_name_file_and_line(tmp_path, file, text, message):
  for name in ("triples", "entities", "filtered"):
    shutil.copy(LP / f"{name}.txt", tmp_path)
  data = text.encode("utf-8").replace("\xff".encode("utf-8"), b"\xff")
  (tmp_path / f"{file}.txt").write_bytes(data)
  with pytest.raises(InputError, match=message):
    released.read_prixlm_lp(tmp_path)


def test_lp_release_errors(tmp_path):
  with pytest.raises(InputError, match="no triples.txt"):
    released.read_prixlm_lp(tmp_path)
  with pytest.raises(InputError, match=r"no test triples in \['fi'\]"):
    released.read_prixlm_lp(LP, ["fi"])


def test_xlr_release_items():
  items = released.read_xlr_release(XLR)
  assert [(i["id"], i["split"], i["lang"], i["label"]) for i in items] == [
      ("dev.csv:2", "dev", "en", 1), ("dev.csv:4", "dev", "en", 0),
      ("test/de.json:1", "test", "de", 0), ("test/en.json:1", "test", "en", 1),
      ("test/en.json:2", "test", "en", 0), ("train.csv:2", "train", "en", 1),
      ("train.csv:4", "train", "en", 0)]
  first = items[0]
  assert first["context"] == ["(Poland, located in time zone, UTC+01:00)",
                              "(Poland, located in time zone, Central European Time)"]
  assert first["question"] == "What is the relation between UTC+01:00 and Central European Time?"
  assert first["choices"][first["label"]] == "said to be the same as" and len(first["choices"]) == 6


def test_xlr_release_from_a_zip(tmp_path):
  with zipfile.ZipFile(tmp_path / "logic.zip", "w") as z:
    for path in sorted(XLR.rglob("*")):
      if path.is_file():
        z.write(path, "logic/" + str(path.relative_to(XLR)))
  got = released.read_xlr_release(tmp_path / "logic.zip")
  want = released.read_xlr_release(XLR)
  assert [(i["split"], i["lang"], i["choices"], i["label"]) for i in got] == \
      [(i["split"], i["lang"], i["choices"], i["label"]) for i in want]


@pytest.mark.parametrize("name, text, message", [
    ("dev.csv", "sent1,sent2,ending0,ending1,label\nc,q,a,b,2\n", r"dev\.csv:2: field 'label'"),
    ("dev.csv", "sent1,sent2,ending0,label\nc,q,a,0\n", r"dev\.csv:2: field 'ending0'.*at least 2"),
    ("test/de.json", '{"sent1": "c", "sent2": "q", "ending0": "a", "ending1": "b", "label": 0}\n'
     '{"sent1": "c", "ending0": "a", "ending1": "b", "label": 0}\n',
     r"de\.json:2: field 'sent2'"),
    ("test/de.json", '{"sent1": "c", "sent2": "q", "ending0": "a", "ending1": "b", "label": 0}\n'
     '{"sent1": "c", "sent2": \n', r"de\.json:2: invalid JSON"),
])
def test_malformed_xlr_records_name_file_and_line(tmp_path, name, text, message):
  root = tmp_path / "logic"
  shutil.copytree(XLR, root)
  (root / name).write_text(text, encoding="utf-8")
  with pytest.raises(InputError, match=message):
    released.read_xlr_release(root)


def test_xlr_file_without_a_split(tmp_path):
  (tmp_path / "items.json").write_text('{"sent1": "c"}\n')
  with pytest.raises(InputError, match=r"items\.json: no split"):
    released.read_xlr_release(tmp_path)


def _prixlm_checkpoint(tmp_path: Path, **changes) -> Path:
  """A tiny random Prix-LM checkpoint whose tokenizer is the XLM-R one trimmed to the
  fixture's names, plus the Prix-LM tokens of en and de."""
  from flax import nnx

  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.config import preset
  from kmlm_jax.models.encoder import Encoder
  from kmlm_jax.text import prixlm
  from kmlm_jax.text.trim import trim_tokenizer_json
  from kmlm_jax.text.vocab import add_tokens_to_tokenizer_json, default_vocab_path, load_vocab
  texts = [field for name in ("triples", "entities", "filtered")
           for line in (LP / f"{name}.txt").read_text().splitlines() for field in line.split("\t")]
  trim_tokenizer_json(default_vocab_path(), texts, tmp_path / "trimmed.json")
  (tmp_path / "tok").mkdir()
  add_tokens_to_tokenizer_json(tmp_path / "trimmed.json", prixlm.added_tokens(["en", "de"]),
                               tmp_path / "tok" / "tokenizer.json")
  vocab = load_vocab(str(tmp_path / "tok" / "tokenizer.json"))
  config = preset("tiny", vocab_size=vocab.vocab_size, hidden_size=16, num_heads=2,
                  intermediate_size=32, num_layers=1, max_position_embeddings=66, **changes)
  path = tmp_path / "ckpt"
  mc.save_model_checkpoint(path, config, mc.model_params(Encoder(config, rngs=nnx.Rngs(0))),
                           tokenizer_dir=tmp_path / "tok")
  return path


def test_eval_lp_splits_runs_on_the_released_format(tmp_path, capsys):
  """`kmlm-jax eval --tasks lp --lp-splits DIR`: the corpus directory is not read."""
  from kmlm_jax.cli import main
  ckpt = _prixlm_checkpoint(tmp_path)
  config = tiny_run.eval_config(tmp_path / "eval_cfg.py", corpus_dir=str(tmp_path / "none"),
                                lp_beams=4)
  out = tmp_path / "out"
  code = main(["eval", "--config", str(config), "--ckpt", str(ckpt), "--tasks", "lp",
               "--lp-splits", str(LP), "--out", str(out)])
  assert code == 0, capsys.readouterr().err
  results = json.loads((out / "results.json").read_text())["results"]
  lp = next(iter(results.values()))["lp"]
  assert sorted(lp["by_language"]) == ["de", "en"]
  assert lp["by_language"]["en"]["count"] == 4 and lp["by_language"]["de"]["count"] == 1
  assert lp["notes"]["en"] == {"duplicate_entity_lines": 1, "answers_not_in_entities": 1}
  assert lp["by_language"]["en"]["hits@10"] <= 0.75  # the Tokyo query can never be answered
  assert "link prediction" in (out / "results.md").read_text()
  # --lp-langs picks languages; a bad line fails before any model is loaded.
  assert main(["eval", "--config", str(config), "--ckpt", str(ckpt), "--tasks", "lp",
               "--lp-splits", str(LP), "--lp-langs", "de", "--out", str(tmp_path / "o2")]) == 0
  de_only = json.loads((tmp_path / "o2" / "results.json").read_text())["results"]
  assert list(next(iter(de_only.values()))["lp"]["by_language"]) == ["de"]
  bad = tmp_path / "bad"
  shutil.copytree(LP, bad)
  (bad / "triples.txt").write_text("France\tcapital\tParis\n")
  capsys.readouterr()
  assert main(["eval", "--config", str(config), "--ckpt", str(ckpt), "--tasks", "lp",
               "--lp-splits", str(bad), "--out", str(tmp_path / "o3")]) == 2
  assert f"{bad}/triples.txt:1: expected 4" in capsys.readouterr().err
  assert main(["eval", "--config", str(config), "--ckpt", str(ckpt), "--tasks", "lp",
               "--lp-langs", "de", "--out", str(tmp_path / "o4")]) == 2


@pytest.mark.slow
def test_eval_lp_splits_on_a_causal_checkpoint(tmp_path, capsys):
  """The released Prix-LM is a fully causal decoder (model.attention=causal, what `convert
  --from-hf` makes of it): the released splits run on it too."""
  from kmlm_jax.cli import main
  ckpt = _prixlm_checkpoint(tmp_path, attention="causal")
  config = tiny_run.eval_config(tmp_path / "eval_cfg.py", corpus_dir=str(tmp_path / "none"),
                                lp_beams=4)
  code = main(["eval", "--config", str(config), "--ckpt", str(ckpt), "--tasks", "lp",
               "--lp-splits", str(LP), "--out", str(tmp_path / "out")])
  assert code == 0, capsys.readouterr().err
  results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
  assert sorted(next(iter(results.values()))["lp"]["by_language"]) == ["de", "en"]


def test_eval_xlr_release_runs_on_the_assumed_format(tmp_path, capsys):
  """`kmlm-jax eval --tasks xlr --xlr-release DIR` (a tiny BERT, two fine-tuning steps):
  English train/dev from the release, a test accuracy per language of its test files."""
  from kmlm_jax.cli import main
  vocab = tiny_run.wordpiece(tmp_path / "vocab")
  ckpt = tiny_run.checkpoint(tmp_path / "ckpt")
  config = tiny_run.eval_config(tmp_path / "eval_cfg.py", corpus_dir=str(tmp_path / "none"),
                                vocab=str(vocab), finetune={
                                    "steps": 2, "batch_size": 8, "eval_every": 1, "seeds": (0,),
                                    "max_length": 48, "warmup_steps": 0})
  out = tmp_path / "out"
  code = main(["eval", "--config", str(config), "--ckpt", str(ckpt), "--tasks", "xlr",
               "--xlr-release", str(XLR), "--out", str(out)])
  assert code == 0, capsys.readouterr().err
  xlr = next(iter(json.loads((out / "results.json").read_text())["results"].values()))["xlr"]
  assert xlr["counts"] == {"de": 1, "en": 2}
  assert "### XLR accuracy" in (out / "results.md").read_text()


def test_released_data_replace_the_corpus_files(tmp_path):
  """With --xlr-release / --lp-splits the corpus directory is not needed; an XLR release
  without English train items is refused naming it."""
  from kmlm_jax.evaluation import run
  config = run.EvalConfig(corpus_dir=str(tmp_path / "none"), lp_splits=str(LP),
                          xlr_release=str(XLR)).validate()
  assert run.corpus_tasks(config, ("xlr", "lp", "probe")) == ["probe"]
  data = run.read_task_data(config, ("xlr", "lp"))
  assert len(data["xlr"]) == 7 and list(data["lp"]) == ["en", "de"]
  only_test = tmp_path / "logic"
  shutil.copytree(XLR / "test", only_test / "test")
  config = run.EvalConfig(corpus_dir="unused", xlr_release=str(only_test))
  with pytest.raises(InputError, match=f"xlr_release {only_test}: no English \\(en\\) train"):
    run.read_task_data(config, ("xlr",))
  with pytest.raises(InputError, match="lp_langs"):
    run.EvalConfig(corpus_dir="x", lp_langs="en").validate()
