"""Readers for the data the original KMLM, Prix-LM and knowledge-adapter authors released.

Each reader takes the files as published (a folder, or the release's zip archive where one
was published) and fails on a malformed line with one line naming FILE:LINE and the field
(`ReleasedDataError`, an `InputError`; with `skip_bad_records` the KMLM corpora count and
skip such lines instead).

KMLM synthetic corpora (`import_kmlm`, `kmlm-jax kg import-kmlm`). Format learned from
ntunlp/kmlm `wikidata_tool/dump_by_id.py` (knowledge lines), `wikidata_tool/gen_cycles3.py`
and `gen_cycles4.py` (cycle lines), `k-mlm/bin/run_k_mlm_no_trainer.py` (which files it
reads: `kg/*txt`, `kg.cycle/*/*txt`, one example per non-blank line) and the collators of
`k-mlm/src/transformers/data/data_collator.py` (`|` is the linker, `.` ends a sentence):
- a knowledge line is one triple, `head| relation| tail. ` (names joined by `| `, then
  `. `); `kg.zip` holds code-switched lines (file `L1_L2.txt`: each name in L1 or L2),
  `kg_clean.mono.zip` monolingual ones (file `L.txt`);
- a cycle line (`kg.cycle.zip`, file `L.txt`, monolingual) is 3 such sentences (a 3-cycle)
  or 5 (a 4-cycle with a diagonal) joined by a space; the generator removed every `.` from
  the names, so `.` splits sentences unambiguously (knowledge names may hold a `.`: only
  the final one ends the sentence).
The language of a file comes from its name (`en_ko.txt` -> "en-ko", `vi.txt` -> "vi"), as
those scripts name their outputs. Each line becomes the `Sample` that `kg build` writes for a
generated sentence (entity / linker / relation / text segments), so the token cache and the
masking rules treat it the same way: linkers become `<mask>` and never carry loss. The
released files name items, not ids: item ids are -1, and the entity mentions of a cycle are
told apart by their names. The original trained on separate, unreleased validation files
(`val/kg.eval.txt`, `val/r.eval.txt`); here a line is in the validation split when its hash
falls below `validation_fraction` (the token cache's text rule), so a fact may sit on both
sides (its label and alias lines, or its code-switched and monolingual renderings).

XLR (`read_xlr_release`). KMLM released `logic.zip` but no code or description of its
files; the paper (appendix A.2, section 4.5) says the items were run with "the multiple
choice evaluation script implemented by Hugging Face", modified. ASSUMED: the files are in
that script's (transformers `examples/pytorch/multiple-choice/run_swag.py`) input layout,
CSV with a header or JSON lines, one item per record: `sent1` the context (the other
triples of the cycle), `sent2` the question, `ending0` .. `ending5` the choices, `label`
the 0-based index of the answer (`labels` also accepted); the split (train, dev / val /
validation, test) and language come from the file's path (`test.de.json`, `de/test.csv`),
English when none is named (the paper's train and dev sets are English).

Prix-LM link prediction (`read_prixlm_lp`). Learned from luka-group/prix-lm `lp.py` and
its README: a folder (`data/link_prediction`) holding `triples.txt` (test queries
`e1<TAB>r<TAB>e2<TAB>lang`), `entities.txt` (candidates, `ent<TAB>lang`) and `filtered.txt`
(known true triples, `e1<TAB>r<TAB>e2<TAB>lang`), or the `triples.zip`, `entities.zip`,
`filtered.zip` the repository ships. Used as given: nothing is re-drawn. As in `lp.py`, a
query whose answer is not in the language's entity list stays a query that no search can
answer (a miss); a repeated entity line is one candidate (counted in `LPSplit.notes`).

Knowledge-adapter KG tasks (`read_dbp5l`, `read_wk3l60`). Learned from
yifan-h/Multilingual_Space `exp/kge/utils.py` (`load_data`) and `exp/kge/tasks.py`:
- DBP5L: `relations.txt` and `entity/LANG.tsv` (one URI per line, the line number is the
  id; the label is the URI's last `/` segment, for entities with `_` made a space and
  parentheses dropped), and the triples `extended/LANG-{train,test}.tsv` (22 languages in
  the extended release; the original DBP5L layout `kg/LANG-*.tsv` is read too),
  `h<TAB>r<TAB>t` per line. A file whose first line is three integers in a language with
  an entity table is read as ids; any other file as the names themselves (what `tasks.py`
  embeds for the test triples).
- WK3L60: `alignment/L1_L2_60k_*.csv` (a name with "train" is the train split, any other
  the test split), one `source@@@target` pair per line.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from kmlm_jax.kg.errors import BadRecord, KGInputError, ReadStats, where
from kmlm_jax.kg.graph import clean_name
from kmlm_jax.kg.samples import (KIND_CODE_SWITCHED, KIND_PARALLEL, KIND_REASONING, Sample,
                                 cycle_sample, triple_sample)

# `kmlm-jax kg import-kmlm` options -> the stream each release fills.
KMLM_STREAMS = {"kg": KIND_CODE_SWITCHED, "mono": KIND_PARALLEL, "cycles": KIND_REASONING}
VARIANT = "release"  # the Sample variant of imported lines (label and alias lines mixed)
LINKER = "|"
DEFAULT_VALIDATION_FRACTION = 0.01
_LANG = re.compile(r"[a-z]{2,3}(?:-[a-z]{2,8})?")
_TRIPLE_FIELDS = ("head", "relation", "tail")


class ReleasedDataError(KGInputError):
  """A released file that does not read; the message names FILE:LINE and the field."""


def _error(name: str, line: int | None, message: str, field: str | None = None):
  return ReleasedDataError(f"{where(name, line, field)}: {message}")


# ---------------------------------------------------------------- files


@dataclasses.dataclass(frozen=True)
class TextFile:
  """A released text file: on disk (`inside`: its path under the folder given), or a
  member of a zip archive (`member`)."""

  path: Path
  member: str | None = None
  inside: str | None = None

  @property
  def name(self) -> str:
    """How messages name it: PATH or ARCHIVE:MEMBER."""
    return f"{self.path}:{self.member}" if self.member else str(self.path)

  @property
  def relative(self) -> str:
    """Its path inside the release (the member, its path under the folder, or its name)."""
    return self.member or self.inside or self.path.name

  def text(self) -> str:
    """The whole file, decoded (a UTF-8 BOM dropped)."""
    return "".join(line + "\n" for _, line in self.lines())

  def lines(self) -> Iterator[tuple[int, str]]:
    """(1-based number, line without its line break); non-UTF-8 names the line."""
    with self._open() as f:
      for number, raw in enumerate(f, 1):
        try:
          text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
          raise _error(self.name, number, f"not UTF-8 text ({e.reason} at byte {e.start})"
                       ) from None
        yield number, text.rstrip("\r\n")

  @contextlib.contextmanager
  def _open(self):
    try:
      if self.member is None:
        with open(self.path, "rb") as f:
          yield f
      else:
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as f:
          yield f
    except (OSError, zipfile.BadZipFile) as e:
      raise ReleasedDataError(f"{self.name}: cannot be read ({getattr(e, 'strerror', None) or e})"
                              ) from None


def text_files(source: Path | str, suffixes: Sequence[str] = (".txt",)) -> list[TextFile]:
  """The files ending in `suffixes` of a release: one such file, every one under a folder,
  or every member of a zip archive; sorted by path."""
  source, suffixes = Path(source), tuple(suffixes)
  if not source.exists():
    raise ReleasedDataError(f"{source}: no such file or folder")
  if source.is_dir():
    found = [TextFile(p, inside=str(p.relative_to(source))) for p in sorted(source.rglob("*"))
             if p.is_file() and p.name.endswith(suffixes) and not p.name.startswith(".")]
  elif source.name.endswith(".zip"):
    try:
      with zipfile.ZipFile(source) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(suffixes)
                       and not n.startswith("__MACOSX/") and not Path(n).name.startswith("."))
    except (OSError, zipfile.BadZipFile) as e:
      raise ReleasedDataError(f"{source}: not a readable zip archive ({e})") from None
    found = [TextFile(source, n) for n in names]
  else:
    found = [TextFile(source)] if source.name.endswith(suffixes) else []
  if not found:
    raise ReleasedDataError(f"{source}: no {' or '.join(suffixes)} file in it")
  return found


def _tsv_rows(file: TextFile, fields: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
  """(line, fields) of each non-blank line, split at tabs after stripping the line (as
  Prix-LM's `lp.py` reads); a wrong field count or an empty field names FILE:LINE."""
  for number, line in file.lines():
    line = line.strip()
    if not line:
      continue
    values = line.split("\t")
    if len(values) != len(fields):
      raise _error(file.name, number, f"expected {len(fields)} tab-separated fields "
                   f"({', '.join(fields)}), got {len(values)}")
    for name, value in zip(fields, values):
      if not value.strip():
        raise _error(file.name, number, "empty value", name)
    yield number, values


# ---------------------------------------------------------------- KMLM corpora


def file_languages(file: TextFile) -> list[str]:
  """["en", "ko"] for `en_ko.txt`, ["vi"] for `vi.txt` (the names ntunlp/kmlm's scripts
  write); a sample's language joins them with "-"."""
  codes = Path(file.relative).stem.split("_")
  if not 1 <= len(codes) <= 2 or not all(_LANG.fullmatch(c) for c in codes):
    raise ReleasedDataError(
        f"{file.name}: cannot tell the language from the file name; name the files as "
        "ntunlp/kmlm's wikidata_tool writes them, LANG.txt or LANG1_LANG2.txt (e.g. en_ko.txt)")
  return codes


def _names(text: str, prefix: str = "") -> tuple[str, str, str]:
  """(head, relation, tail) of `head| relation| tail` (the final `.` already removed)."""
  parts = text.split(LINKER)
  if len(parts) != 3:
    raise BadRecord("wrong_linker_count", f"{prefix}linkers" if prefix else None,
                    f"expected 2 '{LINKER}' linkers between head, relation and tail, got "
                    f"{len(parts) - 1}")
  names = []
  for field, part in zip(_TRIPLE_FIELDS, parts):
    name, _ = clean_name(part.strip(), prefix + field)
    if not name:
      raise BadRecord("empty_field", prefix + field, "empty name")
    names.append(name)
  return tuple(names)


def _sentence_text(line: str) -> str:
  text = line.strip()
  if not text.endswith("."):
    raise BadRecord("no_final_period", None,
                    "expected sentences `head| relation| tail.` ending with '.'")
  return text[:-1]


def parse_knowledge_line(line: str) -> tuple[str, str, str]:
  """`head| relation| tail. ` -> (head, relation, tail); a bad line raises `BadRecord`."""
  return _names(_sentence_text(line))


def parse_cycle_line(line: str) -> list[tuple[str, str, str]]:
  """The 3 or 5 sentences of a cycle line, each (head, relation, tail)."""
  sentences = _sentence_text(line).split(".")
  if len(sentences) not in (3, 5):
    raise BadRecord("wrong_sentence_count", None,
                    f"expected 3 sentences (a 3-cycle) or 5 (a 4-cycle with a diagonal), "
                    f"got {len(sentences)}")
  triples = [_names(s, f"sentence {k + 1} ") for k, s in enumerate(sentences)]
  entities = {name for h, _, t in triples for name in (h, t)}
  size = {3: 3, 5: 4}[len(triples)]
  if len(entities) > size:
    raise BadRecord("not_a_cycle", None, f"{len(triples)} sentences name {len(entities)} "
                    f"entities; a {size}-cycle has at most {size}")
  return triples


def read_kmlm_stream(source: Path | str, kind: str, stats: ReadStats | None = None,
                     skip_bad_records: bool = False) -> Iterator[tuple[str, Sample]]:
  """(stripped line, Sample) of every line of a released corpus (`kind`: code_switched or
  parallel for knowledge lines, reasoning for cycle lines), file by file in path order."""
  stats = stats if stats is not None else ReadStats()
  for file in text_files(source):
    lang = "-".join(file_languages(file))
    for number, line in file.lines():
      if not line.strip():
        continue
      stats.records_read += 1
      try:
        if kind == KIND_REASONING:
          triples = parse_cycle_line(line)
          sample = cycle_sample(lang, VARIANT, [(names, (-1, -1, -1)) for names in triples],
                                (-1,) * len(triples))
        else:
          sample = triple_sample(kind, lang, VARIANT, parse_knowledge_line(line), (-1, -1, -1), -1)
      except BadRecord as e:
        stats.bad(skip_bad_records, file.name, number, e.reason, e.field, e.message, "lines")
        continue
      stats.records_kept += 1
      yield line.strip(), sample


def _write_splits(out: Path, stream: str, lines: Iterable[tuple[str, Sample]], num_shards: int,
                  fraction: float, preview: int) -> dict[str, dict]:
  """Writes one stream's training and validation shards (sample j of a split to shard
  j mod N) and previews; returns the manifest entry of each split."""
  from kmlm_jax.data.cache import is_validation_line
  from kmlm_jax.kg import build, records
  splits = (build.TRAIN, build.VALIDATION)
  paths = {s: build.shard_paths(stream, num_shards, s) for s in splits}
  state = {s: {"n": 0, "by_lang": collections.Counter(), "by_cycle": collections.Counter(),
               "preview": []} for s in splits}
  with contextlib.ExitStack() as stack:
    writers = {s: stack.enter_context(build.shard_writers(out, paths[s])) for s in splits}
    for line, sample in lines:
      split = build.VALIDATION if is_validation_line(line.encode(), fraction) else build.TRAIN
      s = state[split]
      writers[split][s["n"] % num_shards].write(records.to_example(sample))
      s["n"] += 1
      build.count_sample(sample, s["by_lang"], s["by_cycle"])
      if len(s["preview"]) < preview:
        s["preview"].append(build.preview_line(sample))
  return {split: build.finish_stream(out, stream, paths[split], s["preview"], s["by_lang"],
                                     s["by_cycle"], {}, split) for split, s in state.items()}


def import_kmlm(out: Path | str, sources: dict[str, str], *, num_shards: int = 4,
                validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                skip_bad_records: bool = False, overwrite: bool = False,
                preview: int = 20) -> dict:
  """Writes KMLM's released corpora as a `kg build` corpus directory (manifest, training
  and validation shards per stream, previews; no graph and no evaluation sets) that the
  token cache, `kmlm-jax data cache` and `kmlm-jax train` read like a built one.
  `sources`: {"kg" | "mono" | "cycles": folder, zip archive or .txt file}. Returns the
  manifest."""
  from kmlm_jax import fileio
  unknown = sorted(set(sources) - set(KMLM_STREAMS))
  if unknown or not sources:
    raise KGInputError(f"KMLM release sources: expected some of {list(KMLM_STREAMS)}, got "
                       f"{sorted(sources)}")
  if not 0 <= validation_fraction < 1:
    raise KGInputError(f"--validation-fraction must be in [0, 1), got {validation_fraction}")
  if num_shards < 1:
    raise KGInputError(f"--num-shards must be at least 1, got {num_shards}")
  # Missing folders and badly named files fail before anything is written.
  langs = dict.fromkeys(code for source in sources.values() for file in text_files(source)
                        for code in file_languages(file))
  stats = ReadStats()
  with fileio.writing(out), fileio.atomic_directory(out, overwrite, KGInputError) as tmp:
    entries = {}
    for key, source in sources.items():
      stream = KMLM_STREAMS[key]
      lines = read_kmlm_stream(source, stream, stats, skip_bad_records)
      entries[stream] = _write_splits(tmp, stream, lines, num_shards, validation_fraction,
                                      preview)
    stats.check()
    manifest = _manifest(sources, entries, stats, list(langs), num_shards,
                         validation_fraction)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
  return manifest


def _manifest(sources: dict, entries: dict, stats: ReadStats, langs: list[str],
              num_shards: int, fraction: float) -> dict:
  """A `kg build` manifest for imported corpora: the streams and their validation split,
  the read counts; zero for what a release does not hold (graph, evaluation sets)."""
  from kmlm_jax.kg import build
  streams = {s: e[build.TRAIN] for s, e in entries.items()}
  cycles = collections.Counter()
  for split in entries.get(KIND_REASONING, {}).values():
    cycles.update(split.get("by_cycle", {}))
  knowledge = sum(e[split]["samples"] for k, e in entries.items() if k != KIND_REASONING
                  for split in e)
  return {
      "format": build.FORMAT,
      "source": {"kmlm_release": {key: str(path) for key, path in sources.items()}},
      "languages": sorted(langs, key=lambda l: (l != "en", l)),
      "seed": 0,
      "options": {"num_shards": num_shards, "validation_fraction": fraction,
                  "validation_rule": "blake2b-64 of the stripped line / 2**64 < "
                                     "validation_fraction (the token cache's text rule)"},
      "entities": 0, "relations": 0, "triples": knowledge,
      "cycles3": cycles["cycles3"], "cycles4": cycles["cycles4"],
      "skipped": stats.num_skipped, "read": stats.as_dict(), "read_info": {},
      "graph_fingerprint": None,
      "held_out": {"pairs": 0, "triples": 0, "cycles3": 0, "cycles4": 0},
      "cycles_used": {"cycles3": cycles["cycles3"], "cycles4": cycles["cycles4"]},
      "streams": streams,
      "validation": {"pairs": 0, "triples": 0, "cycles3": 0, "cycles4": 0, "links": {},
                     "streams": {s: e[build.VALIDATION] for s, e in entries.items()}},
      "eval": {"lp_test": {}, "probes": {}, "xlr": {"train": {}, "dev": {}, "test": {}},
               "alignment": {}},
  }


def import_command(args) -> str:
  """`kmlm-jax kg import-kmlm`: the import, then the stats table and where it wrote."""
  from kmlm_jax.kg import build, commands
  commands.check_out(Path(args.out), args.overwrite)
  sources = {key: getattr(args, key) for key in KMLM_STREAMS if getattr(args, key)}
  if not sources:
    raise KGInputError("give at least one of --kg, --mono, --cycles (KMLM's kg.zip, "
                       "kg_clean.mono.zip, kg.cycle.zip or their unpacked folders)")
  fraction = args.validation_fraction
  manifest = import_kmlm(args.out, sources, num_shards=args.num_shards,
                         validation_fraction=DEFAULT_VALIDATION_FRACTION if fraction is None
                         else fraction,
                         skip_bad_records=args.skip_bad_records, overwrite=args.overwrite)
  read = manifest["read"]
  lines = [build.stats_table(manifest), "",
           f"read: {read['records_read']:,} lines, kept {read['records_kept']:,}, "
           f"skipped {read['skipped']:,}"]
  if read["skipped_by_reason"]:
    lines += ["", build.table(["skipped", "lines", "first at"],
                              [[r, n, read["skipped_examples"][r][0]]
                               for r, n in read["skipped_by_reason"].items()])]
  return "\n".join(lines + [f"wrote {args.out}/manifest.json"])


# ---------------------------------------------------------------- XLR (assumed layout)

_XLR_SPLITS = {"train": "train", "dev": "dev", "val": "dev", "valid": "dev",
               "validation": "dev", "test": "test"}
_NOT_LANGS = {"xlr", "all", "set", "csv", "json", "jsonl", "txt"}


def _xlr_name(file: TextFile) -> tuple[str, str]:
  """(lang, split) from the file's path in the release; English when no language is
  named; a missing split raises."""
  stem = re.sub(r"\.(csv|jsonl?)$", "", file.relative)
  parts = re.split(r"[/._\\-]", stem)
  split = next((_XLR_SPLITS[p] for p in parts if p in _XLR_SPLITS), None)
  if split is None:
    raise ReleasedDataError(f"{file.name}: no split (train, dev, val, validation, test) in "
                            "the file's path")
  lang = next((p for p in parts if re.fullmatch(r"[a-z]{2,3}", p) and p not in _XLR_SPLITS
               and p not in _NOT_LANGS), "en")
  return lang, split


def _xlr_records(file: TextFile) -> Iterator[tuple[int, dict]]:
  """(line, record) of a CSV file with a header, or of JSON lines / a JSON array."""
  if file.relative.endswith(".csv"):
    reader = csv.DictReader(io.StringIO(file.text(), newline=""))
    reader.fieldnames  # noqa: B018  (reads the header)
    start = reader.line_num + 1
    for record in reader:  # a record's line is the one it starts on
      yield start, record
      start = reader.line_num + 1
    return
  import tempfile

  from kmlm_jax.evaluation.readers.errors import ReaderError, iter_json_records
  with contextlib.ExitStack() as stack:
    path = file.path
    if file.member is not None:  # the JSON reader reads files: a member goes to one
      path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / Path(file.member).name
      path.write_text(file.text(), encoding="utf-8")
    try:
      yield from iter_json_records(path)
    except ReaderError as e:
      raise ReleasedDataError(str(e).replace(str(path), file.name, 1)) from None


def _xlr_item(record: dict, file: TextFile, line: int, lang: str, split: str) -> dict:
  """One item in the records `kmlm_jax.evaluation.xlr.run` reads."""
  for key in ("sent1", "sent2"):
    if not isinstance(record.get(key), str):
      raise _error(file.name, line, f"expected a string, got {record.get(key)!r}", key)
  choices = []
  while f"ending{len(choices)}" in record:
    value = record[f"ending{len(choices)}"]
    if not isinstance(value, str) or not value.strip():
      raise _error(file.name, line, f"expected a non-empty string, got {value!r}",
                   f"ending{len(choices)}")
    choices.append(value)
  if len(choices) < 2:
    raise _error(file.name, line, f"expected choices ending0, ending1, ... (at least 2), got "
                 f"{len(choices)}", "ending0")
  key = "label" if "label" in record else "labels"
  label = record.get(key)
  if isinstance(label, str) and re.fullmatch(r"\s*\d+\s*", label):
    label = int(label)
  if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
    raise _error(file.name, line, f"expected the answer's index 0..{len(choices) - 1}, got "
                 f"{label!r}", key)
  context = [c.strip() for c in record["sent1"].splitlines() if c.strip()]
  return {"id": f"{file.relative}:{line}", "split": split, "lang": lang, "context": context,
          "question": record["sent2"].strip(), "choices": choices, "label": label}


def read_xlr_release(source: Path | str) -> list[dict]:
  """Every item of the XLR release (see the module docstring for the assumed layout), as
  the records `kmlm_jax.evaluation.xlr.run` reads, in file order."""
  items = []
  for file in text_files(source, (".csv", ".json", ".jsonl")):
    lang, split = _xlr_name(file)
    items += [_xlr_item(record, file, line, lang, split) for line, record in _xlr_records(file)]
  return items


# ---------------------------------------------------------------- Prix-LM link prediction

def _folder(directory: Path | str) -> Path:
  directory = Path(directory)
  if not directory.is_dir():
    raise ReleasedDataError(f"{directory}: no such folder")
  return directory


LP_FILES = {"triples": ("head", "relation", "tail", "lang"), "entities": ("entity", "lang"),
            "filtered": ("head", "relation", "tail", "lang")}


def _lp_file(directory: Path, name: str) -> TextFile:
  """DIR/NAME.txt, or the one .txt member of DIR/NAME.zip."""
  if (directory / f"{name}.txt").is_file():
    return TextFile(directory / f"{name}.txt")
  if (directory / f"{name}.zip").is_file():
    members = text_files(directory / f"{name}.zip")
    if len(members) != 1:
      raise ReleasedDataError(f"{directory / name}.zip: expected one .txt file in it, found "
                              f"{[m.member for m in members]}")
    return members[0]
  raise ReleasedDataError(f"{directory}: no {name}.txt (or {name}.zip); expected Prix-LM's "
                          "link-prediction release (luka-group/prix-lm data/link_prediction)")


def read_prixlm_lp(directory: Path | str, languages: Sequence[str] | None = None) -> dict:
  """lang -> `lp_eval.LPSplit` of Prix-LM's released link-prediction files, for the
  languages of `triples.txt` (in order of first appearance) or `languages`."""
  from kmlm_jax.evaluation.lp_eval import LPSplit
  directory = _folder(directory)
  files = {name: _lp_file(directory, name) for name in LP_FILES}
  queries = collections.defaultdict(list)
  for number, (h, r, t, lang) in _tsv_rows(files["triples"], LP_FILES["triples"]):
    queries[lang].append((h, r, t, number))
  wanted = list(languages) if languages else list(queries)
  absent = [l for l in wanted if l not in queries]
  if absent:
    raise ReleasedDataError(f"{files['triples'].name}: no test triples in {absent} (it has "
                            f"{list(queries)})")
  entities = {lang: [] for lang in wanted}
  for _, (name, lang) in _tsv_rows(files["entities"], LP_FILES["entities"]):
    if lang in entities:
      entities[lang].append(name)
  true_tails = {lang: collections.defaultdict(set) for lang in wanted}
  for _, (h, r, t, lang) in _tsv_rows(files["filtered"], LP_FILES["filtered"]):
    if lang in true_tails:
      true_tails[lang][(h, r)].add(t)
  out = {}
  for lang in wanted:
    if not entities[lang]:
      raise ReleasedDataError(f"{files['entities'].name}: no entities in {lang!r}")
    unique = list(dict.fromkeys(entities[lang]))
    known = set(unique)
    notes = {"duplicate_entity_lines": len(entities[lang]) - len(unique),
             "answers_not_in_entities": sum(t not in known for _, _, t, _ in queries[lang])}
    out[lang] = LPSplit(lang, unique, queries[lang], dict(true_tails[lang]),
                        Path(files["triples"].name), notes)
  return out


# ---------------------------------------------------------------- DBP5L / WK3L60


@dataclasses.dataclass(frozen=True)
class KGSplit:
  """One language's KG-completion triples by name: train (h, r, t), test (h, r, t, where)."""

  lang: str
  train: list[tuple[str, str, str]]
  test: list[tuple[str, str, str, str]]


def _table(path: Path, entity: bool) -> list[str] | None:
  """The labels of an id table (line k = id k), None when the file is absent. As in the
  original, a URI line's label is its last `/` segment (entities: `_` -> space, parentheses
  dropped)."""
  if not path.is_file():
    return None
  labels = [line.split("/")[-1] for _, line in TextFile(path).lines()]
  if entity:
    labels = [l.replace("_", " ").replace("(", "").replace(")", "") for l in labels]
  return labels


def _kg_triples(file: TextFile, entities: list[str] | None, relations: list[str] | None):
  """(h, r, t, "FILE:LINE") of a DBP5L triples file, ids mapped to labels when the file
  holds ids (see the module docstring)."""
  rows = list(_tsv_rows(file, _TRIPLE_FIELDS))
  ids = (entities is not None and relations is not None and bool(rows)
         and all(v.strip().isdigit() for v in rows[0][1]))
  out = []
  for number, values in rows:
    if ids:
      values = [_label_of(file, number, field, value, table)
                for field, value, table in zip(_TRIPLE_FIELDS, values,
                                               (entities, relations, entities))]
    out.append((*values, f"{file.name}:{number}"))
  return out


def _label_of(file: TextFile, number: int, field: str, value: str, table: list[str]) -> str:
  value = value.strip()
  if not value.isdigit() or int(value) >= len(table):
    raise _error(file.name, number, f"expected an id 0..{len(table) - 1} (the file's first "
                 f"line holds ids), got {value!r}", field)
  return table[int(value)]


def read_dbp5l(directory: Path | str) -> dict[str, KGSplit]:
  """lang -> `KGSplit` of each language with a test file (sorted by language)."""
  directory = _folder(directory)
  kg = next((directory / d for d in ("extended", "kg") if (directory / d).is_dir()), directory)
  tests = sorted(kg.glob("*-test.tsv"))
  if not tests:
    raise ReleasedDataError(f"{directory}: no LANG-test.tsv under extended/ or kg/ (expected "
                            "the DBP5L release of yifan-h/Multilingual_Space)")
  relations = _table(directory / "relations.txt", entity=False)
  out = {}
  for test in tests:
    lang = test.name[:-len("-test.tsv")]
    entities = _table(directory / "entity" / f"{lang}.tsv", entity=True)
    train = kg / f"{lang}-train.tsv"
    train_rows = (_kg_triples(TextFile(train), entities, relations) if train.is_file() else [])
    out[lang] = KGSplit(lang, [row[:3] for row in train_rows],
                        _kg_triples(TextFile(test), entities, relations))
  return out


def read_wk3l60(directory: Path | str) -> dict[str, dict[str, list[tuple[str, str, str]]]]:
  """"L1_L2" -> split ("train" / "test") -> [(source, target, "FILE:LINE")]."""
  directory = _folder(directory)
  folder = directory / "alignment" if (directory / "alignment").is_dir() else directory
  files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
  if not files:
    raise ReleasedDataError(f"{directory}: no .csv file in alignment/ (expected the WK3L60 "
                            "release of yifan-h/Multilingual_Space)")
  out: dict = {}
  for path in files:
    if "_60k_" not in path.name:
      raise ReleasedDataError(f"{path}: expected a name L1_L2_60k_SPLIT.csv (e.g. "
                              "en_de_60k_test75.csv)")
    pair, rest = path.name.split("_60k_", 1)
    split = "train" if "train" in rest else "test"
    rows = out.setdefault(pair, {}).setdefault(split, [])
    for number, line in TextFile(path).lines():
      if not line.strip():
        continue
      parts = line.split("@@@")
      if len(parts) != 2:
        raise _error(str(path), number, f"expected `source@@@target`, got {len(parts) - 1} "
                     "'@@@' separators")
      for field, value in zip(("source", "target"), parts):
        if not value.strip():
          raise _error(str(path), number, "empty name", field)
      rows.append((parts[0], parts[1], f"{path}:{number}"))
  return out
