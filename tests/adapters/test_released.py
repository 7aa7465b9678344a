"""The knowledge-adapter paper's released KG sets (tests/fixtures/released/{dbp5l,wk3l60},
in the layout yifan-h/Multilingual_Space exp/kge/utils.py reads): parsed records, FILE:LINE
errors, the retrieval sets `adapters eval --dbp5l/--wk3l60` scores."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from kmlm_jax.adapters import evaluate
from kmlm_jax.kg import released
from kmlm_jax.kg.errors import KGInputError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "released"


def test_dbp5l_ids_map_to_uri_labels_and_text_files_are_read_as_names():
  splits = released.read_dbp5l(FIXTURES / "dbp5l")
  assert list(splits) == ["el", "en", "fi"]
  en = splits["en"]
  assert en.train == [("France", "capital", "Paris"), ("Paris", "country", "France"),
                      ("Berlin", "country", "Germany")]
  assert [t[:3] for t in en.test] == [("Germany", "capital", "Berlin"),
                                      ("United States", "capital", "Washington, D.C."),
                                      ("France", "capital", "Paris")]
  assert en.test[1][3].endswith("extended/en-test.tsv:2")
  assert [t[:3] for t in splits["el"].test] == [("Γαλλία", "capital", "Παρίσι")]
  # fi has no entity table: its test triples are the names themselves.
  assert [t[:3] for t in splits["fi"].test] == [("Ranska", "capital", "Pariisi"),
                                                ("Saksa", "capital", "Berliini")]


def test_wk3l60_pairs_by_file_name():
  pairs = released.read_wk3l60(FIXTURES / "wk3l60")
  assert sorted(pairs) == ["en_de", "en_fr"] and sorted(pairs["en_de"]) == ["test", "train"]
  assert [r[:2] for r in pairs["en_de"]["test"]] == [
      ("germany", "deutschland"), ("france", "frankreich"),
      ("the french republic", "frankreich")]
  assert pairs["en_de"]["train"][0][:2] == ("lewiston, idaho", "lewiston (idaho)")


def test_retrieval_sets_as_the_original_builds_them():
  splits = released.read_dbp5l(FIXTURES / "dbp5l")
  sets = evaluate.dbp5l_sets(splits, filtered=True)
  en = sets["en"]
  assert en.queries == ["Germany capital", "United States capital", "France capital"]
  assert en.candidates == ["Berlin", "Washington, D.C.", "Paris"]  # the test tails
  assert en.answers.tolist() == [0, 1, 2] and en.exclude == [[], [], []]
  # Filtering uses the train and test triples of the language.
  split = dataclasses.replace(splits["en"], train=splits["en"].train + [
      ("Germany", "capital", "Paris")])
  assert evaluate.dbp5l_sets({"en": split}, filtered=True)["en"].exclude[0] == [2]
  assert evaluate.dbp5l_sets({"en": split}, filtered=False)["en"].exclude[0] == []
  align = evaluate.wk3l60_sets(released.read_wk3l60(FIXTURES / "wk3l60"))
  assert sorted(align) == ["en-de", "en-fr"]
  de = align["en-de"]
  assert de.candidates == ["deutschland", "frankreich"] and de.answers.tolist() == [0, 1, 1]
  scores = np.eye(3, 2)  # query i closest to candidate i: the third query ranks 2nd
  assert evaluate.score(scores, de)["hits@1"] == pytest.approx(2 / 3)


def _copy(tmp_path, name):
  target = tmp_path / name
  shutil.copytree(FIXTURES / name, target)
  return target


@pytest.mark.parametrize("name, file, text, message", [
    ("dbp5l", "extended/en-test.tsv", "2\t0\t3\n5\t0\n", "en-test.tsv:2: expected 3"),
    ("dbp5l", "extended/en-test.tsv", "2\t0\t3\n5\t0\t9\n",
     "en-test.tsv:2: field 'tail': expected an id 0..5"),
    ("dbp5l", "extended/en-train.tsv", "0\t0\t1\nx\t1\t0\n", "en-train.tsv:2: field 'head'"),
    ("dbp5l", "extended/fi-test.tsv", "Ranska\t\tPariisi\n", "fi-test.tsv:1: field 'relation'"),
    ("wk3l60", "alignment/en_fr_60k_test75.csv", "africa@@@afrique\nemi group\n",
     "en_fr_60k_test75.csv:2: expected `source@@@target`"),
    ("wk3l60", "alignment/en_fr_60k_test75.csv", "africa@@@\n",
     "en_fr_60k_test75.csv:1: field 'target': empty"),
    ("wk3l60", "alignment/en_fr.csv", "a@@@b\n", "en_fr.csv: expected a name L1_L2_60k_"),
])
def test_malformed_lines_name_file_and_line(tmp_path, name, file, text, message):
  root = _copy(tmp_path, name)
  (root / file).write_text(text, encoding="utf-8")
  read = released.read_dbp5l if name == "dbp5l" else released.read_wk3l60
  with pytest.raises(KGInputError, match=message.replace(".", r"\.").replace("`", ".")):
    read(root)


def test_missing_release(tmp_path):
  with pytest.raises(KGInputError, match="missing: no such folder"):
    released.read_dbp5l(tmp_path / "missing")
  with pytest.raises(KGInputError, match="no LANG-test.tsv"):
    released.read_dbp5l(tmp_path)
  with pytest.raises(KGInputError, match="no .csv file"):
    released.read_wk3l60(tmp_path)


@pytest.mark.slow
def test_adapters_eval_on_the_released_sets(tmp_path):
  """`adapters eval --dbp5l --wk3l60` (frozen base): the released sets replace
  the corpus's and are scored per language / pair."""
  from kmlm_jax.adapters import train as train_lib
  from tests.adapters.test_adapters import _config
  corpus = tmp_path / "kg"
  train_lib.build_sample_corpus(corpus, streams=False)
  config = _config(corpus)  # on the (2, 2, 2) mesh of the 8 test devices
  config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, modes=("base",)))
  results = evaluate.evaluate(config, tmp_path / "work", dbp5l=str(FIXTURES / "dbp5l"),
                              wk3l60=str(FIXTURES / "wk3l60"))
  scores = results["scores"]
  assert sorted(scores["completion"]["base"]) == ["el", "en", "fi"]
  assert sorted(scores["alignment"]["base"]) == ["en-de", "en-fr"]
  assert scores["completion"]["base"]["en"]["count"] == 3
  assert "completion (DBP5L" in results["table"] and "alignment (WK3L60" in results["table"]
