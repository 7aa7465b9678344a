"""KMLM's released corpora (tests/fixtures/released/kmlm, lines written as ntunlp/kmlm's
wikidata_tool writes them): parsed records, FILE:LINE errors, the import into a corpus
directory, and that directory through the token cache and the training input."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kmlm_jax.kg import released
from kmlm_jax.kg.errors import KGInputError, ReadStats
from kmlm_jax.kg.samples import ROLE_ENTITY, ROLE_LINKER, ROLE_RELATION, ROLE_TEXT

FIXTURES = Path(__file__).parents[1] / "fixtures" / "released" / "kmlm"
SOURCES = {"kg": FIXTURES / "kg", "mono": FIXTURES / "kg_clean.mono",
           "cycles": FIXTURES / "kg.cycle"}
ROOT = Path(__file__).parents[2]
E, L, R, T = ROLE_ENTITY, ROLE_LINKER, ROLE_RELATION, ROLE_TEXT


def _samples(source, kind, **kw):
  return [s for _, s in released.read_kmlm_stream(source, kind, **kw)]


def test_knowledge_lines_become_kg_build_samples():
  samples = _samples(SOURCES["kg"], "code_switched")
  assert [(s.lang, s.segments[::2]) for s in samples] == [
      ("en-de", ("Germany", "shares border with", "Frankreich")),
      ("en-de", ("Deutschland", "Hauptstadt", "Berlin")),
      ("en-de", ("Berlin", "country", "Deutschland")),
      ("en-de", ("Federal Republic of Germany", "Amtssprache", "German")),
      ("en-de", ("Washington, D.C.", "Staat", "United States")),  # a '.' inside a name stays
      ("en-ko", ("대한민국", "capital", "서울")),
      ("en-ko", ("Seoul", "국가", "South Korea"))]
  first = samples[0]
  assert first.segments == ("Germany", "", "shares border with", "", "Frankreich", ".")
  assert first.roles == (E, L, R, L, E, T)
  assert (first.kind, first.cycle, first.variant) == ("code_switched", 0, "release")
  assert first.item_ids == (-1,) * 6 and first.triple_ids == (-1,)
  assert first.text() == "Germany <mask> shares border with <mask> Frankreich."
  mono = _samples(SOURCES["mono"], "parallel")
  assert [(s.kind, s.lang) for s in mono] == [("parallel", "de")] * 2 + [("parallel", "en")] * 2


def test_cycle_lines_become_reasoning_samples():
  three, _, four = _samples(SOURCES["cycles"], "reasoning")
  assert (three.lang, three.cycle, four.lang, four.cycle) == ("en", 3, "de", 4)
  assert three.text() == ("Germany <mask> shares border with <mask> France. France <mask> "
                          "shares border with <mask> Belgium. Germany <mask> shares border "
                          "with <mask> Belgium.")
  # Entities keep one span id across sentences (by name), relations get 4 + sentence.
  assert three.span_ids == (0, -1, 4, -1, 1, -1, 1, -1, 5, -1, 2, -1, 0, -1, 6, -1, 2, -1)
  assert three.sentence_ids == (0,) * 6 + (1,) * 6 + (2,) * 6
  assert four.segments[:6] == ("Deutschland", "", "grenzt an", "", "Frankreich", ".")
  assert [four.segments[6 * k + 2] for k in range(5)] == ["grenzt an"] * 5
  spans = four.span_ids
  assert (spans[0::6], spans[2::6], spans[4::6]) == ((0, 1, 2, 0, 1), (4, 5, 6, 7, 8),
                                                    (1, 2, 3, 3, 3))
  assert four.triple_ids == (-1,) * 5


def test_parse_lines_by_hand():
  assert released.parse_knowledge_line("a| b| c. ") == ("a", "b", "c")
  assert released.parse_knowledge_line("St. Louis| twinned with| Lyon.") == \
      ("St. Louis", "twinned with", "Lyon")
  assert released.parse_cycle_line("a| r| b.  b| s| c.  a| t| c. ") == \
      [("a", "r", "b"), ("b", "s", "c"), ("a", "t", "c")]


@pytest.mark.parametrize("kind, line, message", [
    ("code_switched", "Germany| shares border with France. ", "expected 2 '|' linkers"),
    ("code_switched", "Germany| shares border with| France", "ending with '.'"),
    ("code_switched", "Germany| | France. ", "field 'relation': empty name"),
    ("code_switched", "a| b| c| d. ", "got 3"),
    ("reasoning", "a| r| b.  b| s| c. ", "expected 3 sentences"),
    ("reasoning", "a| r| b.  b| s c.  a| t| c. ", "field 'sentence 2 linkers'"),
    ("reasoning", "a| r| b.  c| s| d.  e| t| f. ", "name 6 entities"),
])
def test_malformed_line_names_file_and_line(tmp_path, kind, line, message):
  path = tmp_path / "en_de.txt"
  path.write_text("a| b| c. \n\n" + line + "\n" if kind != "reasoning" else
                  "a| r| b.  b| s| c.  a| t| c. \n\n" + line + "\n", encoding="utf-8")
  with pytest.raises(KGInputError, match=f"{path}:3") as info:
    _samples(path, kind)
  assert message in str(info.value) and "--skip-bad-records" in str(info.value)
  stats = ReadStats()
  assert len(_samples(path, kind, stats=stats, skip_bad_records=True)) == 1
  assert stats.records_read == 2 and stats.num_skipped == 1
  assert stats.examples[next(iter(stats.skipped))] == [f"{path}:3"]


def test_bad_files(tmp_path):
  (tmp_path / "part-0001.txt").write_text("a| b| c. \n")
  with pytest.raises(KGInputError, match="part-0001.txt: cannot tell the language"):
    _samples(tmp_path, "parallel")
  with pytest.raises(KGInputError, match="no such file or folder"):
    _samples(tmp_path / "missing", "parallel")
  (tmp_path / "part-0001.txt").unlink()
  with pytest.raises(KGInputError, match="no .txt file"):
    _samples(tmp_path, "parallel")
  (tmp_path / "en.txt").write_bytes(b"a| b| c. \n\xff| b| c. \n")
  with pytest.raises(KGInputError, match=r"en\.txt:2: not UTF-8"):
    _samples(tmp_path, "parallel")


def test_zip_archive_reads_like_the_folder(tmp_path):
  archive = tmp_path / "kg.cycle.zip"
  with zipfile.ZipFile(archive, "w") as z:
    for path in sorted(SOURCES["cycles"].rglob("*.txt")):
      z.write(path, "kg.cycle/" + str(path.relative_to(SOURCES["cycles"])))
  assert _samples(archive, "reasoning") == _samples(SOURCES["cycles"], "reasoning")
  with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:
    z.writestr("kg/en_fr.txt", "a| b| c. \nno linkers. \n")
  with pytest.raises(KGInputError, match=r"bad\.zip:kg/en_fr\.txt:2"):
    _samples(tmp_path / "bad.zip", "code_switched")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  out = tmp_path_factory.mktemp("released") / "corpus"
  manifest = released.import_kmlm(out, {k: str(v) for k, v in SOURCES.items()}, num_shards=2,
                                  validation_fraction=0.3)
  return out, manifest


def test_import_writes_a_corpus_directory(imported):
  from kmlm_jax.kg import commands, records
  from kmlm_jax.kg.corpus_dir import CorpusDir
  out, manifest = imported
  corpus = CorpusDir(out)
  assert corpus.languages == ("en", "de", "ko")
  counts = {s: e["samples"] + manifest["validation"]["streams"][s]["samples"]
            for s, e in manifest["streams"].items()}
  assert counts == {"code_switched": 7, "parallel": 4, "reasoning": 3}
  assert manifest["validation"]["streams"]["code_switched"]["samples"] > 0  # 0.3 of the lines
  assert manifest["read"]["records_read"] == 14 and manifest["skipped"] == 0
  back = [records.from_example(r) for split in ("train", "validation")
          for p in corpus.shards("code_switched", split) for r in _tfrecords(p)]
  assert sorted(s.segments for s in back) == sorted(
      s.segments for s in _samples(SOURCES["kg"], "code_switched"))
  assert "code_switched" in commands.stats(out)


def _tfrecords(path):
  from kmlm_jax.data.cache import _tfrecords
  return list(_tfrecords(str(path)))


def test_import_refuses_bad_input_and_leaves_nothing(tmp_path):
  bad = tmp_path / "kg"
  bad.mkdir()
  (bad / "en_fr.txt").write_text("a| b| c. \na| b c. \n")
  with pytest.raises(KGInputError, match=r"en_fr\.txt:2"):
    released.import_kmlm(tmp_path / "out", {"kg": str(bad)})
  assert not (tmp_path / "out").exists()
  with pytest.raises(KGInputError, match="expected some of"):
    released.import_kmlm(tmp_path / "out", {"text": str(bad)})
  manifest = released.import_kmlm(tmp_path / "out", {"kg": str(bad)}, skip_bad_records=True)
  assert manifest["read"]["skipped_by_reason"] == {"wrong_linker_count": 1}


def test_imported_corpus_through_token_cache_and_masking(imported, tmp_path):
  """The normal training input on the import: linkers are <mask> and never in the loss;
  reasoning rows have loss only on relation/entity mentions."""
  from kmlm_jax.config import DataConfig
  from kmlm_jax.data import cache
  from kmlm_jax.text.vocab import default_vocab_path, load_vocab
  from kmlm_jax.training import data as data_lib
  out, _ = imported
  vocab = load_vocab(default_vocab_path())
  base = DataConfig(corpus_dir=str(out), cache_dir=str(tmp_path / "cache"), seq_length=64,
                    max_predictions=16, batch_size=4, block_examples=8)
  spec, _ = data_lib.cache_spec(base)  # one tokenizing pass for the three streams
  cache.build(tmp_path / "cache", spec, ["code_switched", "parallel", "reasoning"],
              progress=False)
  for mixture in ("kmlm_knowledge_cs", "kmlm_knowledge_parallel", "kmlm_reasoning"):
    config = dataclasses.replace(base, mixture=mixture)
    batches = data_lib.make_batches(config, vocab.vocab_size, 0, 1)
    rows = next(iter(batches))
    batches.close()
    ids = rows["input_ids"]
    weights = rows["mlm_weights"] > 0
    assert weights.any() and (ids == vocab.mask_id).any()
    targets = rows["mlm_targets"][weights]  # never a linker (<mask>, or a literal '|')
    assert not np.isin(targets, [vocab.mask_id, vocab.bos_id, vocab.eos_id,
                                 vocab.encode("|")[-1]]).any()
  opened = cache.TokenCache(tmp_path / "cache")
  source = opened.source("code_switched")
  ex = source.gather(np.arange(source.num_examples))
  linker = ex["roles"] == ROLE_LINKER
  assert (ex["tokens"][linker] == vocab.mask_id).all() and linker.sum() == 2 * len(ex["lengths"])


@pytest.mark.slow
def test_imported_corpus_trains_with_the_tiny_config(imported, tmp_path):
  """`kmlm-jax train` (configs/tiny.py, KMLM-Mix with the UDHR text of en/de/ko) on the
  imported release: a few steps, finite losses of the knowledge and reasoning terms."""
  out, _ = imported
  corpus = tmp_path / "corpus"
  shutil.copytree(out, corpus)
  result = subprocess.run(
      [sys.executable, "-m", "kmlm_jax.cli", "train", "--config", "configs/tiny.py",
       "--workdir", str(tmp_path / "run"), "train.steps=3", "train.log_every=1",
       "train.checkpoint_every=3", f"data.corpus_dir={corpus}",
       f"data.cache_dir={tmp_path / 'cache'}", "data.block_examples=16"],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "status=completed steps=3" in result.stdout, result.stdout
