"""Runs the original KMLM cycle generators (ntunlp/kmlm wikidata_tool/gen_cycles3.py and
gen_cycles4.py, unchanged, from a clone outside this repository) on the embedded sample
dump, and compares the cycles they find with kmlm_jax.kg.cycles.mine_cycles.

MongoDB is replaced by an in-memory stand-in holding the dump's records (what
wikidata_tool/load_db.py would insert: items and properties by id); the whitelists are
every entity and property of the dump, in dump order. The generators' `run()` is called
as written; the harness only records, through two wrappers, the cycles `get_root_cycles*`
returns (before the generators' own dedup) and the cycles written (after it).

  python compare_original_cycles.py --kmlm-src DIR [--langs en,vi,...]

DIR holds gen_cycles3.py and gen_cycles4.py (`git clone https://github.com/ntunlp/kmlm`,
then DIR=kmlm/wikidata_tool). Prints one line per language and a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

from kmlm_jax.kg.cycles import mine_cycles
from kmlm_jax.kg.sample import KMLM_LANGUAGES, read_sample, sample_dump_path


class _Collection:
  def __init__(self, docs):
    self.by_id = {d["id"]: d for d in docs}

  def find_one(self, query):
    return self.by_id.get(query["id"])

  def find(self, query):
    doc = self.by_id.get(query["id"])
    return [doc] if doc is not None else []


def _stub_pymongo(records):
  db = {"item": _Collection([r for r in records if r["type"] == "item"]),
        "property": _Collection([r for r in records if r["type"] == "property"])}

  class Client:
    def __init__(self, *args, **kwargs):
      pass

    def __getitem__(self, name):
      return db

    def close(self):
      pass

  module = types.ModuleType("pymongo")
  module.MongoClient = Client
  sys.modules["pymongo"] = module


def _read_dump(path: Path) -> list[dict]:
  records = []
  for line in path.read_text(encoding="utf-8").splitlines():
    line = line.strip().rstrip(",")
    if len(line) > 4:
      records.append(json.loads(line))
  return records


def run_original(source: Path, lang: str, ids: list[str], pids: list[str], work: Path):
  """(cycles returned by get_root_cycles*, cycles written) of one generator and language."""
  code = source.read_text(encoding="utf-8")
  body, call = code.rstrip().rsplit("\n", 1)
  assert call.strip() == "run()", "the generator no longer ends with run()"
  ns = {"__name__": "original_generator"}
  exec(compile(body, str(source), "exec"), ns)
  (work / "entities").write_text("\n".join(ids) + "\n")
  (work / "relations").write_text("\n".join(pids) + "\n")
  ns.update(LANG=lang, DUMP_FILE=str(work / f"{source.stem}.{lang}.txt"),
            ENTITY_PATH=str(work / "entities"), RELATION_PATH=str(work / "relations"),
            CACHE={})
  found, written = [], []
  roots = next(k for k in ns if k.startswith("get_root_cycles"))
  search, edges_in = ns[roots], ns["get_edges_in_cycle"]

  def record_search(root, edges):
    out = search(root, edges)
    found.extend(out)
    return out

  def record_written(line):
    written.append(tuple(line))
    return edges_in(line)

  ns[roots], ns["get_edges_in_cycle"] = record_search, record_written
  ns["run"]()
  return found, written


def triangle_key(nodes) -> tuple:
  return tuple(sorted(nodes))


def diamond_key(cycle) -> tuple:
  """(diagonal u < v, apexes a < b) of the original's [root, i, j, k]: the 4-cycle
  root-i-j-k-root with diagonal i-k (its fifth edge, `line[1]`-`line[-1]`)."""
  root, i, j, k = cycle
  return (*sorted((i, k)), *sorted((root, j)))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--kmlm-src", required=True, type=Path)
  ap.add_argument("--langs", default=",".join(KMLM_LANGUAGES))
  args = ap.parse_args(argv)
  records = _read_dump(sample_dump_path())
  _stub_pymongo(records)
  ids = [r["id"] for r in records if r["type"] == "item"]
  pids = [r["id"] for r in records if r["type"] == "property"]

  graph, _, _ = read_sample()
  cycles = mine_cycles(graph.triples, graph.num_entities, 0)
  qid = graph.entity_ids
  ours3 = {triangle_key(qid[t]) for t in cycles.triangles}
  ours4 = {(*sorted(qid[d[:2]]), *sorted(qid[d[2:]])) for d in cycles.diamonds}
  assert len(ours3) == len(cycles.triangles) and len(ours4) == len(cycles.diamonds)
  print(f"kmlm-jax (kmlm_jax.kg.cycles.mine_cycles, sample, uncapped): "
        f"{len(ours3):,} triangles, {len(ours4):,} diamonds")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for lang in args.langs.split(","):
      f3, w3 = run_original(args.kmlm_src / "gen_cycles3.py", lang, ids, pids, Path(tmp))
      f4, w4 = run_original(args.kmlm_src / "gen_cycles4.py", lang, ids, pids, Path(tmp))
      t_found = {triangle_key(c) for c in f3}
      d_found = {diamond_key(c) for c in f4}
      d_written = {diamond_key(c) for c in w4}
      rows.append((lang, len(t_found), len(w3), len(d_found), len(d_written)))
      print(f"{lang}: original triangles found {len(t_found):,} "
            f"({len(t_found) / len(ours3):.1%}; lines written {len(w3):,}), subset of "
            f"kmlm-jax's: {t_found <= ours3}; diamonds found {len(d_found):,} "
            f"({len(d_found) / len(ours4):.1%}), written after its node-set dedup "
            f"{len(d_written):,} ({len(d_written) / len(ours4):.1%}), subset of kmlm-jax's: "
            f"{d_found <= ours4}")
      assert t_found <= ours3 and d_found <= ours4, lang
  t = np.asarray([r[1] for r in rows]) / len(ours3)
  d = np.asarray([r[3] for r in rows]) / len(ours4)
  w = np.asarray([r[4] for r in rows]) / len(ours4)
  print(f"summary over {len(rows)} languages: the original finds {t.min():.1%}-{t.max():.1%} "
        f"of the triangles and {d.min():.1%}-{d.max():.1%} of the diamonds "
        f"({w.min():.1%}-{w.max():.1%} written); every cycle it finds is in kmlm-jax's set")
  return 0


if __name__ == "__main__":
  sys.exit(main())
