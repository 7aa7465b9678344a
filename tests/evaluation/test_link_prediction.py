"""Link-prediction metrics and the Table 1 layout against hand-computed values
(list ranks: tests/evaluation/test_metrics.py)."""

import numpy as np
import pytest

from kmlm_jax.evaluation.link_prediction import metrics, metrics_by_language, table1_markdown


def test_metrics_by_hand():
  ranks = np.array([1, 2, 4, np.inf, 11, 3])
  m = metrics(ranks)
  assert m["hits@1"] == pytest.approx(1 / 6)
  assert m["hits@3"] == pytest.approx(3 / 6)
  assert m["hits@10"] == pytest.approx(4 / 6)
  assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 0 + 1 / 11 + 1 / 3) / 6)
  assert m["count"] == 6
  with pytest.raises(ValueError, match="1-based"):
    metrics(np.array([0, 1]))
  assert np.isnan(metrics(np.array([]))["mrr"])


def test_metrics_by_language_and_table():
  ranks = np.array([1, np.inf, 2, 5, 1])
  langs = ["en", "en", "de", "de", "ja"]
  by_lang = metrics_by_language(ranks, langs)
  assert list(by_lang) == ["en", "de", "ja", "avg"]
  assert by_lang["en"]["hits@1"] == 0.5 and by_lang["de"]["hits@3"] == 0.5
  assert by_lang["de"]["mrr"] == pytest.approx((1 / 2 + 1 / 5) / 2)
  # Macro average over languages, as the paper's "avg." column.
  assert by_lang["avg"]["hits@1"] == pytest.approx((0.5 + 0 + 1) / 3)
  assert by_lang["avg"]["count"] == 5

  other = {"en": {"hits@1": 0.113, "hits@3": 0.28, "hits@10": 0.414}}
  table = table1_markdown({"Prix-LM (All)": by_lang, "TransE": other}, ["en", "de", "ja"],
                          stats={"# triples (K)": {"en": 7256, "de": 618}})
  lines = table.strip().split("\n")
  assert lines[0] == "| lang. → | en | de | ja | avg. |"
  assert lines[1] == "|---|---|---|---|---|"
  assert lines[2] == "| # triples (K) | 7256 | 618 | - | - |"
  assert lines[3] == "| **Hits@1** | | | | |"
  assert lines[4] == "| Prix-LM (All) | 50.0 | 0.0 | 100.0 | 50.0 |"
  assert lines[5] == "| TransE | 11.3 | - | - | 11.3 |"
  assert lines[6] == "| **Hits@3** | | | | |"
  assert lines[9].startswith("| **Hits@10** |") and len(lines) == 12
  # The avg. column averages the listed languages only.
  with_mrr = table1_markdown({"x": by_lang}, ["en"], metric_names=["mrr"], percent=False,
                             digits=3)
  assert "| **MRR** |" in with_mrr and "| x | 0.500 | 0.500 |" in with_mrr


def test_bad_inputs():
  with pytest.raises(ValueError, match="languages"):
    metrics_by_language(np.array([1.0, 2.0]), ["en"])
  with pytest.raises(ValueError, match="unknown metrics"):
    table1_markdown({}, ["en"], metric_names=["mr"])


def test_prixlm_queries_reject_unknown_relations_and_bad_rows(tmp_path):
  from kmlm_jax.assets import real_xlmr_tokenizer_json
  from kmlm_jax.evaluation.lp_eval import LinkPredictionInputError, prixlm_ranks
  from kmlm_jax.text import prixlm
  from kmlm_jax.text.vocab import XLMRSentencePiece, add_tokens_to_tokenizer_json
  tok = tmp_path / "tokenizer.json"
  add_tokens_to_tokenizer_json(real_xlmr_tokenizer_json(), prixlm.added_tokens(["en"]), tok)
  vocab = XLMRSentencePiece.from_file(tok)
  lp_dir = tmp_path / "eval" / "lp"
  lp_dir.mkdir(parents=True)
  (lp_dir / "en.entities.tsv").write_text("France\ten\nParis\ten\n")
  (lp_dir / "en.filter.tsv").write_text("France\tcapital\tParis\ten\n")
  test = lp_dir / "en.test.tsv"
  test.write_text("France\tcapital\tParis\ten\nFrance\t\U0001F9FF\tParis\ten\n")
  with pytest.raises(LinkPredictionInputError,
                     match=r"en\.test\.tsv:2: field 2 \(relation\): .*unknown to the tokenizer"):
    prixlm_ranks(None, vocab, tmp_path, "en")
  test.write_text("France\tcapital\tParis\n")
  with pytest.raises(LinkPredictionInputError, match=r"en\.test\.tsv:1: expected 4"):
    prixlm_ranks(None, vocab, tmp_path, "en")
  (lp_dir / "en.entities.tsv").write_text("France\ten\nFrance\ten\n")
  with pytest.raises(LinkPredictionInputError, match="duplicate names"):
    prixlm_ranks(None, vocab, tmp_path, "en")


def test_lp_files_are_stripped_of_whitespace_and_a_bom(tmp_path):
  """A trailing space after a head, spaces around tabs, a UTF-8 BOM, CRLF line ends and
  blank lines read as the clean file does (no name gains a space or a BOM)."""
  from kmlm_jax.evaluation.lp_eval import read_split
  from tests.evaluation import tiny_run
  clean = read_split(tiny_run.corpus(tmp_path / "clean"), "en")
  messy = tiny_run.corpus(tmp_path / "messy", lp={
      "entities": "\ufeff" + tiny_run.LP_ENTITIES.replace("\t", " \t "),
      "test": "\ufeffFrance \tcapital\tParis\ten\r\n\r\nGermany\t capital\tBerlin \ten\r\n",
      "filter": tiny_run.LP_TEST.replace("\n", " \n")})
  got = read_split(messy, "en")
  assert got.entities == clean.entities == ["France", "Paris", "Berlin", "Germany"]
  assert [q[:3] for q in got.queries] == [q[:3] for q in clean.queries]
  assert [q[3] for q in got.queries] == [1, 3]  # file lines, blank line counted
  assert got.true_tails == clean.true_tails
