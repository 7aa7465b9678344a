"""Bad input to `kmlm-jax kg build` / `kg stats`: one error line naming the file, line,
field or flag, the documented exit code, no traceback, nothing half-written in --out."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from kmlm_jax.cli import main
from kmlm_jax.errors import WriteError
from kmlm_jax.kg import build, wikidata
from kmlm_jax.kg.graph import KnowledgeGraph
from kmlm_jax.kg.triples_tsv import read_triples_tsv
from tests.bad_inputs import check

FIXTURE = Path(__file__).parents[1] / "fixtures" / "wikidata" / "small_dump.json"


@pytest.fixture(autouse=True)
def quiet_progress(monkeypatch):
  """No progress bars on stderr: `check` wants the error line alone there."""
  import tqdm
  quiet = lambda *a, **k: tqdm.tqdm(*a, **{**k, "disable": True})
  for name in ("tqdm.auto.tqdm", "kmlm_jax.kg.cycles.tqdm"):
    monkeypatch.setattr(name, quiet)


def dump(path: Path, insert: dict[int, str] | None = None, edit=None) -> Path:
  """The fixture dump with `edit(entity)` applied to Q42 (line 2) and `insert`ed lines
  (line number -> text, numbered as in the result)."""
  lines = FIXTURE.read_text(encoding="utf-8").splitlines()
  if edit is not None:
    q42 = json.loads(lines[1].rstrip(","))
    edit(q42)
    lines[1] = json.dumps(q42, ensure_ascii=False) + ","
  for lineno, text in sorted((insert or {}).items()):
    lines.insert(lineno - 1, text)
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def kg_build(source: list, out: Path, *extra) -> list:
  return ["kg", "build", *source, "--langs", "en,fr", "--out", out, *extra]


def assert_nothing_left(out: Path) -> None:
  assert not out.exists()
  assert not list(out.parent.glob(f".{out.name}.tmp-*"))


# ----------------------------------------------------------------- 1. nested JSON

@pytest.mark.parametrize("nested", ["[" * 100_000 + "]" * 100_000,
                                    '{"a":' * 100_000 + "1" + "}" * 100_000])
def test_deeply_nested_json_line_is_a_bad_record(capsys, tmp_path, nested):
  path = dump(tmp_path / "dump.json", {3: nested + ","})
  out = tmp_path / "kg"
  check(capsys, kg_build(["--wikidata-dump", path], out),
        "kg", [f"{path}:3", "nested too deeply", "--skip-bad-records"])
  assert_nothing_left(out)
  _, stats, _ = wikidata.read_wikidata_dump(path, ["en"], skip_bad_records=True)
  assert stats.skipped["malformed_json"] == 1 and stats.examples["malformed_json"] == [
      f"{path}:3"]


# ----------------------------------------------------------------- 2. tabs in labels

@pytest.fixture(scope="module")
def cleaned_build(tmp_path_factory):
  """A build of the fixture whose Q42 has a label and an alias holding tabs and breaks."""
  def edit(q42):
    q42["labels"]["en"]["value"] = "Douglas\t\r\n Adams"
    q42["aliases"]["en"][2]["value"] = "DNA\n"
  tmp = tmp_path_factory.mktemp("cleaned")
  out = tmp / "kg"
  assert main([str(a) for a in kg_build(["--wikidata-dump", dump(tmp / "dump.json", edit=edit)],
                                        out)]) == 0
  return out


def test_label_with_tab_and_line_breaks_is_cleaned_and_counted(cleaned_build, capsys):
  manifest = json.loads((cleaned_build / "manifest.json").read_text(encoding="utf-8"))
  assert manifest["read"]["names_cleaned"] == 2
  graph = KnowledgeGraph.load(cleaned_build / "graph.npz")
  q42 = list(graph.entity_ids).index("Q42")
  assert graph.entity_names["en"].labels[q42] == "Douglas Adams"
  assert "DNA" in graph.entity_names["en"].aliases_of(q42)
  entities = (cleaned_build / "eval" / "lp" / "en.entities.tsv").read_text(encoding="utf-8")
  assert "Douglas Adams\ten\n" in entities.splitlines(keepends=True)
  assert main(["kg", "stats", str(cleaned_build)]) == 0
  assert "names cleaned (tabs, line breaks -> space): 2" in capsys.readouterr().out


# ----------------------------------------------------------------- 3. --num-shards

@pytest.mark.parametrize("shards", ["-1", "-3"])
def test_negative_num_shards(capsys, tmp_path, shards):
  out = tmp_path / "kg"
  check(capsys, kg_build(["--wikidata-dump", FIXTURE], out, "--num-shards", shards),
        "kg", ["--num-shards", shards])
  assert_nothing_left(out)


# ----------------------------------------------------------------- 4. read-only, full disk

def test_out_on_read_only_filesystem(capsys, tmpfs):
  mount = tmpfs("ro", read_only=True)
  out = mount / "kg"
  start = time.perf_counter()
  check(capsys, kg_build(["--wikidata-dump", FIXTURE], out), "kg",
        [f"--out {out}", "read-only"], code=1)
  assert time.perf_counter() - start < 10  # refused before reading
  assert os.listdir(mount) == []


def test_build_into_read_only_filesystem_is_a_write_error(tmpfs):
  graph, stats, info = wikidata.read_wikidata_dump(FIXTURE, ["en", "fr"])
  mount = tmpfs("ro", read_only=True)
  with pytest.raises(WriteError, match=f"{mount / 'kg'}: cannot write .*Read-only"):
    build.build(graph, mount / "kg", build.BuildOptions(), read_stats=stats)
  assert os.listdir(mount) == []


@pytest.mark.parametrize("free_kb", [0, 40])  # 0: graph.npz fails; 40: a TFRecord shard
def test_out_on_full_disk(capsys, tmpfs, free_kb):
  mount = tmpfs("full", "1m")
  st = os.statvfs(mount)
  (mount / "filler").write_bytes(b"x" * (st.f_bavail * st.f_frsize - free_kb * 1024))
  out = mount / "kg"
  check(capsys, kg_build(["--wikidata-dump", FIXTURE], out), "kg",
        [str(out), "No space left on device"], code=1)
  assert os.listdir(mount) == ["filler"]


# ----------------------------------------------------------------- 5. existing --out first

@pytest.mark.parametrize("source", ["--wikidata-dump", "--triples-tsv"])
@pytest.mark.parametrize("kind", ["large", "fifo"])
def test_existing_out_is_refused_before_reading(capsys, tmp_path, source, kind):
  path = tmp_path / "input"
  if kind == "fifo":
    os.mkfifo(path)  # reading it would block
  else:
    with open(path, "wb") as f:
      f.truncate(200 << 20)  # sparse; reading it would fail on its one 200 MB line
  out = tmp_path / "kg"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  start = time.perf_counter()
  check(capsys, kg_build([source, path], out), "kg", [f"--out {out}", "--overwrite"])
  assert time.perf_counter() - start < 5
  assert os.listdir(out) == ["keep.txt"]


# ----------------------------------------------------------------- 6. kg stats tables

def test_stats_prints_aligned_tables(cleaned_build, capsys):
  assert main(["kg", "stats", str(cleaned_build)]) == 0
  out = capsys.readouterr().out
  assert "{" not in out and "}" not in out
  tables = [block.splitlines() for block in out.split("\n\n") if block.startswith("|")]
  assert [t[0].split("|")[1].strip() for t in tables] == ["stream", "evaluation set", "skipped"]
  for lines in tables:
    assert len({len(line) for line in lines}) == 1, lines  # aligned
    assert len({tuple(i for i, c in enumerate(line) if c == "|") for line in lines}) == 1
  assert any(line.startswith("| alignment train ") for line in tables[1])


# ----------------------------------------------------------------- 7. TSV whitespace, BOM

def _triangles_tsv(path: Path, pad=lambda field: field, bom: str = "") -> Path:
  """Three triangles on six entities, each field passed through `pad`."""
  edges = ["A B", "B C", "A C", "C D", "D E", "C E", "E F", "F A", "A E"]
  lines = ["\t".join(pad(f) for f in (h, f"r{i % 2}", t, "en"))
           for i, (h, t) in enumerate(e.split() for e in edges)]
  path.write_text(bom + "\n".join(lines) + "\n", encoding="utf-8")
  return path


def test_tsv_fields_are_stripped_and_bom_dropped(capsys, tmp_path):
  manifests = []
  for name, pad, bom in (("clean", lambda f: f, ""), ("padded", lambda f: f" {f}  ", "\ufeff")):
    out = tmp_path / name
    tsv = _triangles_tsv(tmp_path / f"{name}.tsv", pad, bom)
    assert main(["kg", "build", "--triples-tsv", str(tsv), "--out", str(out)]) == 0
    manifests.append(json.loads((out / "manifest.json").read_text(encoding="utf-8")))
  clean, padded = manifests
  assert clean["cycles3"] > 0 and clean["streams"]["reasoning"]["samples"] > 0
  for key in ("graph_fingerprint", "cycles3", "cycles4", "streams", "held_out"):
    assert padded[key] == clean[key], key


def test_tsv_bom_is_not_part_of_the_first_name(tmp_path):
  triples = tmp_path / "bom.tsv"
  triples.write_text("\ufeffBerlin\tcountry\tGermany\ten\n", encoding="utf-8")
  entities = tmp_path / "entities.tsv"
  entities.write_text("\ufeffParis \ten\n", encoding="utf-8")
  graph, _, _ = read_triples_tsv(triples)
  assert list(graph.entity_ids) == ["en:Berlin", "en:Germany"]
  graph, _, _ = read_triples_tsv(triples, entities_path=entities)
  assert list(graph.entity_ids) == ["en:Paris", "en:Berlin", "en:Germany"]


# ----------------------------------------------------------------- 8. bounded memory per line

def test_overlong_line_is_a_bad_record(capsys, tmp_path, monkeypatch):
  monkeypatch.setattr(wikidata, "MAX_LINE_BYTES", 1 << 20)
  long_entity = {"type": "item", "id": "Q9", "labels": {"en": {"value": "long"}},
                 "descriptions": {"en": {"value": "x" * (3 << 20)}}}
  path = dump(tmp_path / "dump.json", {3: json.dumps(long_entity) + ","})
  out = tmp_path / "kg"
  check(capsys, kg_build(["--wikidata-dump", path], out), "kg",
        [f"{path}:3", "3,145,", "bytes", "1,048,576", "MAX_LINE_BYTES"])
  assert_nothing_left(out)
  _, stats, _ = wikidata.read_wikidata_dump(path, ["en"], skip_bad_records=True)
  assert stats.skipped["line_too_long"] == 1


def test_overlong_name_is_a_bad_record(capsys, tmp_path):
  def edit(q42):
    q42["labels"]["fr"]["value"] = "y" * 5000
  path = dump(tmp_path / "dump.json", edit=edit)
  out = tmp_path / "kg"
  check(capsys, kg_build(["--wikidata-dump", path], out), "kg",
        [f"{path}:2", "labels.fr", "5,000 characters"])
  tsv = tmp_path / "long.tsv"
  tsv.write_text(f"A\tr\tB\ten\n{'z' * 5000}\tr\tB\ten\n", encoding="utf-8")
  check(capsys, ["kg", "build", "--triples-tsv", tsv, "--out", out], "kg",
        [f"{tsv}:2", "'head'", "5,000 characters"])
  assert_nothing_left(out)
