"""`kmlm-jax kg build`: a KG in, pretraining corpora and evaluation sets out.

Output directory (written to a temporary sibling and renamed at the end, so
a failed build leaves nothing behind; an output that cannot be written, e.g.
a full disk, is a `WriteError` naming it):

  manifest.json        counts per stream and language, read/skip counts,
                       held-out counts, validation counts, options, files
  graph.npz            the KnowledgeGraph (`KnowledgeGraph.load`)
  corpora/STREAM/STREAM-00000-of-0000N.tfrecord
                       serialized tf.train.Example records (`records.py`);
                       streams: code_switched, parallel, reasoning, triple, link
  validation/STREAM/STREAM-00000-of-0000N.tfrecord
                       the validation split of each stream, same format; it
                       never enters the corpora (see below)
  preview/STREAM.jsonl, preview/validation/STREAM.jsonl
                       the first samples of each stream, with their text
  eval/lp/LANG.{test,filter,entities}.tsv    Prix-LM format
  eval/lp/{test,train}_rows.npy             triple rows of graph.npz (KG-embedding baselines)
  eval/probes.jsonl, eval/xlr/SPLIT.jsonl, eval/alignment/LANG.SPLIT.jsonl

Validation split (`evalsets.EvalOptions.validation_fraction` of the entity
pairs, chosen after the evaluation sets): code_switched, parallel and triple
samples of the triples on validation pairs; reasoning samples of the cycles
with an edge on one (and none on an evaluation pair, not XLR cycles); link
samples of the entity-alignment dev pairs (already out of the link stream).
Their samples are generated exactly as the corpora's, from the same options.

Work is cut into units (a chunk of triples or of cycles, of one split) that
can each be generated alone; sample j of unit u goes to shard (u + j) mod N
and shards keep (u, j) order. The Beam pipeline (`beam_pipeline.py`) runs
the same units on workers and writes byte-identical shards.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from kmlm_jax import fileio
from kmlm_jax.kg import cycles as cycles_lib
from kmlm_jax.kg import evalsets, reasoning, records, sentences
from kmlm_jax.kg.errors import KGInputError, ReadStats
from kmlm_jax.kg.graph import KnowledgeGraph
from kmlm_jax.kg.samples import (KIND_CODE_SWITCHED, KIND_LINK, KIND_PARALLEL, KIND_REASONING,
                                 KIND_TRIPLE, Sample)

# KMLM's three streams, then Prix-LM's two.
STREAMS = (KIND_CODE_SWITCHED, KIND_PARALLEL, KIND_REASONING, KIND_TRIPLE, KIND_LINK)
# The splits of every stream: the corpora (pretraining) and the validation split.
TRAIN, VALIDATION = "train", "validation"
SPLIT_DIRS = {TRAIN: "corpora", VALIDATION: "validation"}
FORMAT = "kmlm-jax-corpora-1"
_SENTENCE_CHUNKS = {KIND_CODE_SWITCHED: sentences.code_switched_chunk,
                    KIND_PARALLEL: sentences.parallel_chunk, KIND_TRIPLE: sentences.triples_chunk}


@dataclasses.dataclass(frozen=True)
class BuildOptions:
  """What to generate. `reasoning_langs=None` means every graph language."""

  seed: int = 0
  num_shards: int = 4
  preview: int = 20
  sentences: sentences.SentenceOptions = sentences.SentenceOptions()
  evals: evalsets.EvalOptions = evalsets.EvalOptions()
  reasoning_langs: tuple[str, ...] | None = None
  max_triangles: int | None = None
  max_diamonds: int | None = 200_000


@dataclasses.dataclass
class Plan:
  """Everything a unit of work needs; built once, shared by all units.

  keep_* / validation_*: [M] triples, [C3] triangles, [C4] diamonds in the
  corpora / in the validation split (disjoint).
  """

  graph: KnowledgeGraph
  options: BuildOptions
  cycles: cycles_lib.Cycles
  held: evalsets.HeldOut
  keep_triples: np.ndarray
  keep_triangles: np.ndarray
  keep_diamonds: np.ndarray
  alignment: dict  # lang -> split -> [(id, en label, l' label)]
  alignment_held: dict  # lang -> sorted entity ids of the alignment dev and test pairs
  validation_triples: np.ndarray
  validation_triangles: np.ndarray
  validation_diamonds: np.ndarray
  validation_links: dict  # lang -> sorted entity ids of the alignment dev pairs

  def reasoning_langs(self) -> tuple[str, ...]:
    return self.options.reasoning_langs or self.graph.languages

  def units(self, stream: str, split: str = TRAIN) -> list[tuple]:
    """(split, stream, ...) units of one stream's split, in output order."""
    if stream in _SENTENCE_CHUNKS:
      return [(split, stream, c) for c in range(sentences.num_chunks(self.graph))]
    if stream == KIND_LINK:
      return [(split, stream, c) for c in range(-(-self.graph.num_entities // sentences.CHUNK))]
    return [(split, stream, name, c) for name, rows in (("triangles", self.cycles.triangle_triples),
                                                        ("diamonds", self.cycles.diamond_triples))
            for c in range(-(-len(rows) // reasoning.CHUNK))]

  def generate(self, unit: tuple, counts: dict) -> Iterator[Sample]:
    """The samples of one unit, in order; adds what it did not generate to `counts`
    (when they are all taken): "validation" in the corpora counts the unit's items that
    went to the validation split, which counts no "held_out"."""
    split, stream, *part = unit
    inner: dict = {}
    if stream in _SENTENCE_CHUNKS:
      samples, moved = self._sentence_samples(split, stream, part[0], inner)
    elif stream == KIND_LINK:
      samples, moved = self._link_samples(split, part[0], inner), None
    else:
      samples, moved = self._cycle_samples(split, *part, inner)
    return _then_count(samples, inner, counts, split,
                       None if moved is None else int(moved.sum()))

  def _sentence_samples(self, split: str, stream: str, c: int, inner: dict):
    """(samples, [CHUNK] bool validation triples) of triple chunk c."""
    keep = self.keep_triples if split == TRAIN else self.validation_triples
    samples = _SENTENCE_CHUNKS[stream](self.graph, c, self.options.seed, self.options.sentences,
                                       keep, inner)
    return samples, self.validation_triples[c * sentences.CHUNK:(c + 1) * sentences.CHUNK]

  def _link_samples(self, split: str, c: int, inner: dict) -> Iterator[Sample]:
    if split == TRAIN:
      return sentences.links_chunk(self.graph, c, self.alignment_held, inner)
    return _links_of(sentences.links_chunk(self.graph, c, None, inner), self.validation_links)

  def _cycle_samples(self, split: str, name: str, c: int, inner: dict):
    """(samples, [CHUNK] bool validation cycles) of chunk c of the triangles / diamonds."""
    rows = getattr(self.cycles, f"{name[:-1]}_triples")
    keep, validation = getattr(self, f"keep_{name}"), getattr(self, f"validation_{name}")
    chunk = slice(c * reasoning.CHUNK, (c + 1) * reasoning.CHUNK)
    allowed = keep[chunk] if split == TRAIN else validation[chunk]
    samples = reasoning.generate(self.graph, rows[chunk], self.reasoning_langs(), allowed, inner)
    return samples, validation[chunk]


def _links_of(samples: Iterator[Sample], entities: dict) -> Iterator[Sample]:
  """The link samples whose entity is in `entities[l']` (sorted ids per language)."""
  for sample in samples:
    lang = sample.lang.split("-", 1)[1]
    ids = entities.get(lang, ())
    k = np.searchsorted(ids, sample.item_ids[0])
    if k < len(ids) and ids[k] == sample.item_ids[0]:
      yield sample


def _then_count(samples: Iterator[Sample], inner: dict, counts: dict, split: str,
                moved: int | None) -> Iterator[Sample]:
  """Yields `samples`, then adds the generators' counts `inner` to `counts`: in the
  corpora, the `moved` held-out items of the validation split count as "validation",
  not "held_out"; in the validation split "held_out" (everything else) is dropped."""
  yield from samples
  if split == VALIDATION:
    inner.pop("held_out", None)
  elif moved is not None:
    inner["held_out"] -= moved
    inner["validation"] = moved
  for key, value in inner.items():
    counts[key] = counts.get(key, 0) + value


def make_plan(graph: KnowledgeGraph, options: BuildOptions, progress: bool = False) -> Plan:
  """Mines cycles and picks the held-out evaluation and validation data."""
  cycles = cycles_lib.mine_cycles(graph.triples, graph.num_entities, options.seed,
                                  max_triangles=options.max_triangles,
                                  max_diamonds=options.max_diamonds, progress=progress)
  held = evalsets.choose_held_out(graph, [cycles.triangle_triples, cycles.diamond_triples],
                                  options.seed, options.evals)
  alignment = evalsets.alignment_pairs(graph, graph.languages, options.seed,
                                       options.evals.alignment_fractions)
  index = {e: i for i, e in enumerate(graph.entity_ids)}
  ids = lambda pairs, splits: np.sort([index[i] for split in splits
                                       for i, _, _ in pairs[split]]).astype(np.int64)
  return Plan(graph, options, cycles, held, held.keep_triples(graph),
              held.keep_cycles(graph, cycles.triangle_triples),
              held.keep_cycles(graph, cycles.diamond_triples), alignment,
              {lang: ids(pairs, ("dev", "test")) for lang, pairs in alignment.items()},
              held.validation_triples(graph),
              held.validation_cycles(graph, cycles.triangle_triples),
              held.validation_cycles(graph, cycles.diamond_triples),
              {lang: ids(pairs, ("dev",)) for lang, pairs in alignment.items()})


def shard_paths(stream: str, num_shards: int, split: str = TRAIN) -> list[str]:
  return [f"{SPLIT_DIRS[split]}/{stream}/{stream}-{i:05d}-of-{num_shards:05d}.tfrecord"
          for i in range(num_shards)]


def write_stream(plan: Plan, stream: str, out: Path, progress: bool = False,
                 split: str = TRAIN) -> dict:
  """Writes one stream's shards of one split and its preview; returns its manifest entry."""
  from tqdm.auto import tqdm
  n = plan.options.num_shards
  paths = shard_paths(stream, n, split)
  by_lang, by_cycle, counts = collections.Counter(), collections.Counter(), {}
  preview = []
  desc = stream if split == TRAIN else f"{split} {stream}"
  with shard_writers(out, paths) as writers:
    for u, unit in enumerate(tqdm(plan.units(stream, split), desc=desc, disable=not progress)):
      for j, sample in enumerate(plan.generate(unit, counts)):
        writers[(u + j) % n].write(records.to_example(sample))
        count_sample(sample, by_lang, by_cycle)
        if len(preview) < plan.options.preview:
          preview.append(preview_line(sample))
  return finish_stream(out, stream, paths, preview, by_lang, by_cycle, counts, split)


@contextlib.contextmanager
def shard_writers(out: Path, paths: Sequence[str]) -> Iterator[list]:
  """TFRecord writers of `paths` under `out` (their folder made), all closed on exit even
  when one fails; TF's write errors (e.g. ResourceExhaustedError: "PATH; No space left on
  device") become OSError."""
  import tensorflow as tf
  (out / paths[0]).parent.mkdir(parents=True)
  try:
    with contextlib.ExitStack() as stack:
      yield [stack.enter_context(tf.io.TFRecordWriter(str(out / p))) for p in paths]
  except tf.errors.OpError as e:
    raise OSError(e.message.rsplit("; ", 1)[-1]) from None


def count_sample(sample: Sample, by_lang: collections.Counter, by_cycle: collections.Counter):
  by_lang[sample.lang] += 1
  if sample.cycle:
    by_cycle[f"cycles{sample.cycle}"] += 1


def preview_line(sample: Sample) -> str:
  return json.dumps({"text": sample.text(), **json.loads(sample.to_json())}, ensure_ascii=False)


def finish_stream(out: Path, stream: str, paths: list[str], preview: Sequence[str],
                  by_lang: dict, by_cycle: dict, counts: dict, split: str = TRAIN) -> dict:
  """Writes the stream's preview file; returns its manifest entry."""
  folder = out / "preview" if split == TRAIN else out / "preview" / split
  folder.mkdir(parents=True, exist_ok=True)
  (folder / f"{stream}.jsonl").write_text("".join(p + "\n" for p in preview), encoding="utf-8")
  entry = {"samples": sum(by_lang.values()), "by_lang": dict(sorted(by_lang.items())),
           "not_generated": dict(sorted(counts.items())), "shards": paths}
  if by_cycle:
    entry["by_cycle"] = dict(sorted(by_cycle.items()))
  return entry


def write_evalsets(plan: Plan, out: Path) -> dict:
  g, held, langs = plan.graph, plan.held, plan.graph.languages
  ev = out / "eval"
  lp = evalsets.write_link_prediction(g, held, ev, langs)
  # Triple rows (of graph.npz) of the test queries, and of what pretraining
  # may see: the KG-embedding baselines train and test on these.
  np.save(ev / "lp" / "test_rows.npy", held.lp_rows.astype(np.int64))
  np.save(ev / "lp" / "train_rows.npy", np.flatnonzero(plan.keep_triples).astype(np.int64))
  probes = evalsets.probes(g, held, langs)
  _write_jsonl(ev / "probes.jsonl", probes)
  xlr = evalsets.xlr_items(g, held, langs, plan.options.seed, plan.options.evals.num_choices)
  xlr_counts = {}
  for split in evalsets.SPLITS:
    rows = [x for x in xlr if x["split"] == split]
    _write_jsonl(ev / "xlr" / f"{split}.jsonl", rows)
    xlr_counts[split] = dict(sorted(collections.Counter(x["lang"] for x in rows).items()))
  (ev / "alignment").mkdir()
  for lang, splits in plan.alignment.items():
    for split, pairs in splits.items():
      _write_jsonl(ev / "alignment" / f"{lang}.{split}.jsonl",
                   [{"id": i, "en": a, lang: b} for i, a, b in pairs])
  probe_counts = collections.Counter(p["lang"] for p in probes)
  return {"lp_test": lp, "probes": dict(sorted(probe_counts.items())), "xlr": xlr_counts,
          "alignment": {lang: {split: len(pairs) for split, pairs in splits.items()}
                        for lang, splits in plan.alignment.items()}}


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                  encoding="utf-8")


def build(graph: KnowledgeGraph, out: Path | str, options: BuildOptions, *,
          read_stats: ReadStats | None = None, source: dict | None = None,
          read_info: dict | None = None, overwrite: bool = False, progress: bool = False,
          stream_writer=None) -> dict:
  """Builds everything into `out` atomically; returns the manifest.

  `stream_writer(plan, stream, tmp_dir, progress) -> entry` replaces the
  in-process shard writer (the Beam runner passes its own).
  """
  if graph.num_triples == 0:
    raise KGInputError("the knowledge graph has no triples; nothing to generate")
  options.sentences.targets(graph)  # validates the languages early
  stream_writer = stream_writer or write_stream
  timings = {}
  with fileio.writing(out), fileio.atomic_directory(out, overwrite, KGInputError) as tmp:
    t = time.perf_counter()
    plan = make_plan(graph, options, progress)
    timings["cycles_and_split_s"] = time.perf_counter() - t
    graph.save(tmp / "graph.npz")
    streams, validation = {}, {}
    for stream in STREAMS:
      t = time.perf_counter()
      streams[stream] = stream_writer(plan, stream, tmp, progress)
      timings[f"{stream}_s"] = time.perf_counter() - t
    for stream in STREAMS:
      t = time.perf_counter()
      validation[stream] = stream_writer(plan, stream, tmp, progress, split=VALIDATION)
      timings[f"validation_{stream}_s"] = time.perf_counter() - t
    eval_counts = write_evalsets(plan, tmp)
    stats = read_stats or ReadStats()
    manifest = {
        "format": FORMAT,
        "source": source or {},
        "languages": list(graph.languages),
        "seed": options.seed,
        "options": _jsonable(dataclasses.asdict(options)),
        "entities": graph.num_entities,
        "relations": graph.num_relations,
        "triples": graph.num_triples,
        "cycles3": plan.cycles.total_triangles,
        "cycles4": plan.cycles.total_diamonds,
        "skipped": stats.num_skipped,
        "read": stats.as_dict(),
        "read_info": _jsonable(read_info or {}),
        "graph_fingerprint": graph.fingerprint(),
        "held_out": held_out_counts(plan),
        "cycles_used": {"cycles3": int(len(plan.cycles.triangles)),
                        "cycles4": int(len(plan.cycles.diamonds))},
        "streams": streams,
        "validation": {**validation_counts(plan), "streams": validation},
        "eval": eval_counts,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
  manifest["timings"] = timings  # printed, never written: the files must not vary
  return manifest


def held_out_counts(plan: Plan) -> dict:
  """What the evaluation sets take out of the corpora (validation not included)."""
  return {"pairs": int(len(plan.held.held_pairs)),
          "triples": int((~plan.keep_triples & ~plan.validation_triples).sum()),
          "cycles3": int((~plan.keep_triangles & ~plan.validation_triangles).sum()),
          "cycles4": int((~plan.keep_diamonds & ~plan.validation_diamonds).sum())}


def validation_counts(plan: Plan) -> dict:
  """What the validation split takes out of the corpora."""
  return {"pairs": int(len(plan.held.validation_pairs)),
          "triples": int(plan.validation_triples.sum()),
          "cycles3": int(plan.validation_triangles.sum()),
          "cycles4": int(plan.validation_diamonds.sum()),
          "links": {lang: int(len(ids)) for lang, ids in plan.validation_links.items()}}


def _jsonable(value):
  """Tuples as lists, numpy integers as ints: the value as manifest.json holds it."""
  return json.loads(json.dumps(value, default=int))


def read_manifest(directory: Path | str) -> dict:
  path = Path(directory) / "manifest.json"
  if not path.exists():
    raise KGInputError(f"{path}: missing (not a `kmlm-jax kg build` output directory)")
  try:
    manifest = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise KGInputError(f"{path}: invalid JSON ({e})") from None
  if not isinstance(manifest, dict):
    raise KGInputError(f"{path}: not a JSON object")
  if manifest.get("format") != FORMAT:
    raise KGInputError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  return manifest


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  """An aligned Markdown table: text left, numbers right (with thousands separators)."""
  cells = [[f"{c:,}" if isinstance(c, int) else str(c) for c in row] for row in (header, *rows)]
  widths = [max(3, *map(len, column)) for column in zip(*cells)]
  right = [i > 0 and all(isinstance(row[i], int) for row in rows) for i in range(len(header))]
  rule = ["-" * (w - 1) + ":" if r else "-" * w for w, r in zip(widths, right)]
  line = lambda row: "| " + " | ".join(c.rjust(w) if r else c.ljust(w)
                                       for c, w, r in zip(row, widths, right)) + " |"
  return "\n".join([line(cells[0]), line(rule), *map(line, cells[1:])])


def stats_table(manifest: dict) -> str:
  """A Markdown table like KMLM Table 8: samples per stream and language, then the
  stream's total and its validation split's total."""
  streams = manifest["streams"]
  validation = manifest.get("validation", {}).get("streams")
  langs = sorted({l for s in streams.values() for l in s["by_lang"]})
  rows = [[name, *(entry["by_lang"].get(l, 0) for l in langs), entry["samples"],
           *([validation[name]["samples"]] if validation else [])]
          for name, entry in streams.items()]
  head = (f"entities={manifest['entities']:,} relations={manifest['relations']:,} "
          f"triples={manifest['triples']:,} cycles3={manifest['cycles3']:,} "
          f"cycles4={manifest['cycles4']:,} skipped={manifest['skipped']:,}")
  header = ["stream", *langs, "total", *(["validation"] if validation else [])]
  return head + "\n\n" + table(header, rows)
