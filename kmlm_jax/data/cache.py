"""The token cache: corpora tokenized once, offline, into memory-mappable arrays.

Layout of a cache directory (one per vocabulary and sequence length):

  cache.json             format, vocabulary (path, sha256, size, special ids),
                         seq_length, the text validation rule, and per source
                         ("sources": training, "validation": validation split):
                         rule, example / token / line counts, counted skips, inputs
  SOURCE/tokens.npy      int32 [N]   every example's ids back to back, `<s>`
                         and `</s>` included, linkers written as `<mask>`
  SOURCE/offsets.npy     int64 [E+1] example i is tokens[offsets[i]:offsets[i+1]]
  SOURCE/aux.npy         int16 [E]   cycle length (reasoning), prefix length
                         (Prix-LM), 0 otherwise
  SOURCE/roles.npy, mentions.npy, sentences.npy   int8 / int16 / int16 [N]
                         (knowledge and reasoning sources only; `segments.py`)
  validation/SOURCE/...  the same arrays for the source's validation split

The validation split never enters training. Knowledge and reasoning sources
take it from the `kg build` directory's validation shards
(`validation/STREAM/`, see `kmlm_jax.kg.build`). A text line is held out when
`is_validation_line`: the first 8 bytes of the BLAKE2b hash of the line (its
runs of ASCII whitespace made one space, its ends stripped), read as a
fraction of 2**64, fall below `CacheSpec.validation_fraction` (default 10%:
each KMLM language of the embedded UDHR text then has held-out lines).
The rule depends on the text only, so a line repeated anywhere (in any file
or language) is always on the same side.

Sources: `text.LANG` (text lines cut into windows of at most T tokens),
`code_switched`, `parallel`, `reasoning` (a `kg build` directory's KMLM
streams), `triple`, `link` (its Prix-LM streams; a link gives one example
per direction). Samples longer than T are skipped and counted; a non-UTF-8
text line is an error naming file and line, or a counted skip.

Work is cut into units (a corpus shard of one split, or a byte range of a text
file, which gives both splits) that are tokenized independently, in this
process or as an Apache Beam pipeline, then concatenated in unit order: both
give byte-identical files.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import fcntl
import functools
import glob
import hashlib
import json
import multiprocessing
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from kmlm_jax.data.masking import (RULE_CAUSAL, RULE_KNOWLEDGE, RULE_NAMES, RULE_REASONING,
                                   RULE_TEXT, SpecialIds)
from kmlm_jax.text.errors import CorpusError

FORMAT = "kmlm-jax-token-cache-2"  # 2: the validation split
TRAIN, VALIDATION = "train", "validation"
SPLITS = (TRAIN, VALIDATION)
TEXT_LINES = "lines"  # the split field of a text unit: each line goes to one split
TEXT_VALIDATION_FRACTION = 0.1  # every KMLM language of the embedded UDHR keeps >= 1 line
TEXT_CHUNK_BYTES = 64 << 20
CORPUS_SOURCES = {"code_switched": RULE_KNOWLEDGE, "parallel": RULE_KNOWLEDGE,
                  "reasoning": RULE_REASONING, "triple": RULE_CAUSAL, "link": RULE_CAUSAL}
TOKEN_ARRAYS = {"tokens": np.int32, "roles": np.int8, "mentions": np.int16, "sentences": np.int16}


class CacheMismatchError(CorpusError):
  """The cache was built for another vocabulary or sequence length."""


def rule_of(source: str) -> int:
  return RULE_TEXT if source.startswith("text.") else CORPUS_SOURCES[source]


def _with_roles(source: str) -> bool:
  return rule_of(source) in (RULE_KNOWLEDGE, RULE_REASONING)


@dataclasses.dataclass(frozen=True)
class CacheSpec:
  """What a cache is built from. `text_pattern` has a `{lang}` field."""

  vocab: str
  seq_length: int
  corpus_dir: str | None = None
  text_pattern: str | None = None
  languages: tuple[str, ...] = ()
  skip_bad_lines: bool = False
  validation_fraction: float = TEXT_VALIDATION_FRACTION  # of the text lines


def is_validation_line(raw: bytes, fraction: float) -> bool:
  """Whether a text line (bytes, no line break) belongs to the validation split."""
  digest = hashlib.blake2b(b" ".join(raw.split()), digest_size=8).digest()
  return int.from_bytes(digest, "big") < fraction * 2.0 ** 64


def vocab_fingerprint(vocab_path: str) -> str:
  path = Path(vocab_path)
  files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
  digest = hashlib.sha256()
  for f in files:
    if f.name in ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model") or not path.is_dir():
      digest.update(f.name.encode() + b"\0" + f.read_bytes())
  return digest.hexdigest()


# ---------------------------------------------------------------- units


def check_text_files(spec: CacheSpec, sources: list[str]) -> None:
  """Raises a `CorpusError` naming `data.text_pattern` when the text sources among
  `sources` have languages that no file matches."""
  absent = [s[5:] for s in sources
            if s.startswith("text.") and not glob.glob(spec.text_pattern.format(lang=s[5:]))]
  if absent:
    raise CorpusError(
        f"data.text_pattern: {spec.text_pattern!r} matches no file for the language(s) "
        f"{', '.join(absent)} (e.g. {spec.text_pattern.format(lang=absent[0])!r}); expected a "
        "pattern whose {lang} field names text files of every language the mixture reads")


def plan_units(spec: CacheSpec, sources: list[str]) -> list[tuple]:
  """(source, path, start, end, split) units in output order: a text file's byte ranges
  (split `TEXT_LINES`), then a corpus stream's training shards, then its validation shards."""
  from kmlm_jax.kg.corpus_dir import CorpusDir
  check_text_files(spec, sources)
  units = []
  for source in sources:
    if source.startswith("text."):
      for f in sorted(glob.glob(spec.text_pattern.format(lang=source[5:]))):
        units += [(source, f, a, b, TEXT_LINES) for a, b in _line_ranges(f)]
    else:
      if not spec.corpus_dir:
        raise CorpusError(f"source {source!r} needs a corpus directory (data.corpus_dir)")
      corpus = CorpusDir(spec.corpus_dir)
      units += [(source, str(p), 0, -1, split) for split in SPLITS
                for p in corpus.shards(source, split)]
  return units


def _line_ranges(path: str) -> list[tuple[int, int]]:
  size = os.path.getsize(path)
  bounds = [0]
  with open(path, "rb") as f:
    for b in range(TEXT_CHUNK_BYTES, size, TEXT_CHUNK_BYTES):
      if b <= bounds[-1]:
        continue
      f.seek(b)
      f.readline()
      if f.tell() < size:
        bounds.append(f.tell())
  bounds.append(size)
  return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def run_unit(spec: CacheSpec, unit: tuple, out_dir: str, index: int) -> dict:
  """Tokenizes one unit into `out_dir/SPLIT.SOURCE.INDEX.*.npy` for each split it
  gives; returns {split: its counts}."""
  from kmlm_jax.text.vocab import load_vocab
  vocab = load_vocab(spec.vocab)
  source, path, start, end, split = unit
  stats = {s: {"examples": 0, "tokens": 0, "lines": 0, "skipped": collections.Counter()}
           for s in (SPLITS if split == TEXT_LINES else (split,))}
  if split == TEXT_LINES:
    examples = _text_examples(vocab, spec, path, start, end, stats)
  else:
    examples = ((split, e) for e in _corpus_examples(vocab, spec, source, path, stats[split]))
  by_split = {s: [] for s in stats}
  for s, example in examples:
    by_split[s].append(example)
  for s, part in by_split.items():
    arrays = _to_arrays(part, _with_roles(source))
    stats[s]["examples"] = len(arrays["offsets"]) - 1
    stats[s]["tokens"] = int(arrays["offsets"][-1])
    for name, a in arrays.items():
      np.save(Path(out_dir) / f"{s}.{source}.{index:05d}.{name}.npy", a, allow_pickle=False)
  return stats


def _text_examples(vocab, spec: CacheSpec, path: str, start: int, end: int, stats: dict):
  """(split, example) of each window of each line; `stats` holds the counts per split."""
  from kmlm_jax.text.segments import tokenize_text
  with open(path, "rb") as f:
    f.seek(start)
    data = f.read(end - start)
  for k, raw in enumerate(data.splitlines()):
    split = VALIDATION if is_validation_line(raw, spec.validation_fraction) else TRAIN
    counts = stats[split]
    counts["lines"] += 1
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      if spec.skip_bad_lines:
        counts["skipped"]["non_utf8_line"] += 1
        continue
      with open(path, "rb") as f:
        line = f.read(start).count(b"\n") + k + 1
      raise CorpusError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start}); fix the "
                        "file, or set data.skip_bad_lines=true to skip and count such lines"
                        ) from None
    windows = tokenize_text(vocab, text, spec.seq_length)
    if not windows:
      counts["skipped"]["empty_line"] += 1
    for tokens in windows:
      yield split, (tokens, None, None, None, 0)


def _tfrecords(path: str):
  """The records of a TFRecord file (length, length CRC, data, data CRC; CRCs unchecked:
  a damaged record fails to parse)."""
  with open(path, "rb") as f:
    while header := f.read(12):
      (size,) = struct.unpack("<Q", header[:8])
      data = f.read(size)
      if len(data) != size or len(f.read(4)) != 4:
        raise CorpusError(f"{path}: truncated TFRecord file")
      yield data


def _corpus_examples(vocab, spec: CacheSpec, source: str, path: str, stats: dict):
  from kmlm_jax.kg import records
  for raw in _tfrecords(path):
    stats["lines"] += 1
    for example in _sample_examples(vocab, source, records.from_example(raw)):
      if len(example[0]) > spec.seq_length:
        stats["skipped"]["longer_than_seq_length"] += 1
      else:
        yield example


def _sample_examples(vocab, source: str, sample):
  from kmlm_jax.text import prixlm, segments
  if source in ("triple", "link"):
    ids = prixlm.PrixLMIds.of(vocab)
    names = sample.segments
    if source == "triple":
      pairs = [(prixlm.triple_prefix(vocab, ids, names[0], names[2], check_relation=False),
                names[4])]
    else:
      a, b = sample.lang.split("-", 1)
      pairs = [(prixlm.link_prefix(vocab, ids, names[0], a, b), names[1]),
               (prixlm.link_prefix(vocab, ids, names[1], b, a), names[0])]
    for prefix, obj in pairs:
      seq = prefix + prixlm.object_ids(vocab, ids, obj) + [vocab.eos_id]
      yield np.asarray(seq, np.int32), None, None, None, len(prefix)
    return
  arrays = segments.tokenize_segments(vocab, sample.segments, sample.roles, sample.sentence_ids)
  yield *arrays, sample.cycle


def _to_arrays(examples, with_roles: bool) -> dict[str, np.ndarray]:
  """The arrays of (tokens, roles, mentions, sentences, aux) examples."""
  examples = list(examples)
  lengths = np.asarray([len(e[0]) for e in examples], np.int64)
  out = {"offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
         "aux": np.asarray([e[4] for e in examples], np.int16)}
  for i, (name, dtype) in enumerate(TOKEN_ARRAYS.items()):
    if i == 0 or with_roles:
      parts = [e[i] for e in examples]
      out[name] = (np.concatenate(parts) if parts else np.zeros(0)).astype(dtype)
  return out


# ---------------------------------------------------------------- build


def _merge(parts_dir: Path, split: str, source: str, indices: list[int], target: Path) -> None:
  """Concatenates the arrays of one source's split from its units (`indices`), in unit order."""
  target.mkdir(parents=True)
  names = ["tokens", "offsets", "aux"] + (["roles", "mentions", "sentences"]
                                          if _with_roles(source) else [])
  for name in names:
    parts = [np.load(parts_dir / f"{split}.{source}.{i:05d}.{name}.npy", mmap_mode="r")
             for i in indices]
    if name == "offsets":
      base = np.cumsum([0] + [int(p[-1]) for p in parts[:-1]])
      parts = [parts[0][:1]] + [p[1:] + b for p, b in zip(parts, base)]
    out = np.lib.format.open_memmap(target / f"{name}.npy", "w+", parts[0].dtype,
                                    (sum(len(p) for p in parts),))
    np.concatenate(parts, out=out)
    out.flush()
    del out


def build(cache_dir: Path | str, spec: CacheSpec, sources: list[str], *, runner: str = "direct",
          beam_options: str = "", progress: bool = True) -> dict:
  """Builds the missing `sources` into `cache_dir` (created if needed); returns cache.json.
  Builds of one cache directory by several processes take turns (a lock file beside it,
  `DIR.lock`): the later ones find the sources built."""
  cache_dir = Path(cache_dir)
  if (cache_dir / "cache.json").exists():  # a built cache is read without the lock
    meta = _check_or_new(cache_dir, spec)
    if all(s in meta["sources"] for s in sources):
      return meta
  cache_dir.parent.mkdir(parents=True, exist_ok=True)
  with open(cache_dir.with_name(cache_dir.name + ".lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    meta = _check_or_new(cache_dir, spec)  # as another process may have left it
    missing = [s for s in sources if s not in meta["sources"]]
    if not missing:
      return meta
    created = not cache_dir.exists()
    cache_dir.mkdir(exist_ok=True)
    try:
      _build_units(cache_dir, spec, plan_units(spec, missing), missing, meta, runner,
                   beam_options, progress)
    except BaseException:
      if created:  # a failed first build leaves nothing behind
        shutil.rmtree(cache_dir, ignore_errors=True)
      raise
  return meta


def _build_units(cache_dir: Path, spec: CacheSpec, units: list[tuple], missing: list[str],
                 meta: dict, runner: str, beam_options: str, progress: bool) -> None:
  """Tokenizes `units`, merges them into the `missing` sources and writes cache.json."""
  with tempfile.TemporaryDirectory(prefix=".parts-", dir=cache_dir) as parts:
    if runner == "beam":
      from kmlm_jax.data.cache_beam import run_units
      results = run_units(spec, units, parts, beam_options)
    else:
      results = _run_in_process(spec, units, parts, progress)
    for source in missing:
      for split in SPLITS:
        picked = [i for i, u in enumerate(units) if u[0] == source and split in results[i]]
        staging = Path(parts) / f"merged-{split}-{source}"
        _merge(Path(parts), split, source, picked, staging)
        target = split_dir(cache_dir, split) / source
        target.parent.mkdir(exist_ok=True)
        if target.exists():
          shutil.rmtree(target)
        os.replace(staging, target)
        meta[_META_KEYS[split]][source] = _source_entry(
            source, [units[i] for i in picked], [results[i][split] for i in picked])
  tmp = cache_dir / "cache.json.tmp"
  tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
  os.replace(tmp, cache_dir / "cache.json")


def _run_in_process(spec: CacheSpec, units: list[tuple], parts: str, progress: bool) -> list:
  """`run_unit` over every unit, in worker processes when there are several units and cores."""
  from tqdm.auto import tqdm
  workers = min(len(units), os.cpu_count() or 1)
  bar = functools.partial(tqdm, total=len(units), desc="tokenizing", unit="unit",
                          disable=not progress)
  if workers <= 1:
    return [run_unit(spec, u, parts, i) for i, u in bar(enumerate(units))]
  context = multiprocessing.get_context("spawn")  # the caller may hold JAX/TF threads
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    futures = [pool.submit(run_unit, spec, u, parts, i) for i, u in enumerate(units)]
    try:
      for f in bar(concurrent.futures.as_completed(futures)):
        f.result()
    except BaseException:  # the first failure stops the build: drop the queued units
      pool.shutdown(cancel_futures=True)
      raise
  return [f.result() for f in futures]


_META_KEYS = {TRAIN: "sources", VALIDATION: "validation"}


def split_dir(cache_dir: Path, split: str) -> Path:
  """Where a split's sources are: the cache directory, or its validation/ folder."""
  return cache_dir if split == TRAIN else cache_dir / VALIDATION


def _source_entry(source: str, units: list[tuple], results: list[dict]) -> dict:
  skipped = sum((collections.Counter(r["skipped"]) for r in results), collections.Counter())
  return {"rule": RULE_NAMES[rule_of(source)],
          **{k: sum(r[k] for r in results) for k in ("examples", "tokens", "lines")},
          "skipped": dict(sorted(skipped.items())),
          "inputs": sorted({u[1] for u in units})}


def _check_or_new(cache_dir: Path, spec: CacheSpec) -> dict:
  if (cache_dir / "cache.json").exists():
    meta = read_meta(cache_dir)
    check_matches(cache_dir, meta, spec.vocab, spec.seq_length)
    if meta["text_validation_fraction"] != spec.validation_fraction:
      raise CacheMismatchError(
          f"{cache_dir}: built with {meta['text_validation_fraction']} of the text lines held "
          f"out for validation, this build asks for {spec.validation_fraction}; build another "
          "cache")
    return meta
  from kmlm_jax.text.vocab import load_vocab
  vocab = load_vocab(spec.vocab)
  return {"format": FORMAT, "seq_length": spec.seq_length,
          "vocab": {"path": str(spec.vocab), "sha256": vocab_fingerprint(spec.vocab),
                    "size": int(vocab.vocab_size),
                    "special": dataclasses.asdict(SpecialIds.of(vocab))},
          "text_validation_fraction": spec.validation_fraction,
          "text_validation_rule": "blake2b-64 of the line (ASCII whitespace runs -> one space, "
                                  "ends stripped) / 2**64 < text_validation_fraction",
          "sources": {}, "validation": {}}


# ---------------------------------------------------------------- read


def read_meta(cache_dir: Path | str) -> dict:
  path = Path(cache_dir) / "cache.json"
  if not path.exists():
    raise CorpusError(f"{cache_dir}: not a token cache (no cache.json); build one with "
                      "`kmlm-jax data cache`")
  try:
    meta = json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorpusError(f"{path}: unreadable ({e})") from None
  if meta.get("format") != FORMAT:
    raise CorpusError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r} (another "
                      "kmlm-jax version built it: delete the folder, or set another "
                      "data.cache_dir, to rebuild)")
  return meta


def check_matches(cache_dir, meta: dict, vocab: str | None, seq_length: int | None) -> None:
  """Raises `CacheMismatchError` unless the cache was built with this vocabulary and T."""
  if seq_length is not None and int(meta["seq_length"]) != int(seq_length):
    raise CacheMismatchError(
        f"{cache_dir}: built for seq_length={meta['seq_length']}, the run asks for "
        f"data.seq_length={seq_length}; build another cache (or set data.seq_length)")
  if vocab is not None and vocab_fingerprint(vocab) != meta["vocab"]["sha256"]:
    raise CacheMismatchError(
        f"{cache_dir}: built with the vocabulary {meta['vocab']['path']} (sha256 "
        f"{meta['vocab']['sha256'][:12]}), the run uses {vocab}; build another cache")


class Source:
  """One source of a cache, memory-mapped; `gather` reads examples by index."""

  def __init__(self, cache_dir: Path, name: str, entry: dict):
    self.name, self.rule = name, rule_of(name)
    self.num_examples = int(entry["examples"])
    self._dir = cache_dir / name
    self._arrays: dict[str, np.ndarray] = {}

  def _array(self, name: str) -> np.ndarray | None:
    if name not in self._arrays:
      path = self._dir / f"{name}.npy"
      self._arrays[name] = np.load(path, mmap_mode="r") if path.exists() else None
    return self._arrays[name]

  def gather(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Examples `ids` back to back: tokens/roles/mentions/sentences [N], lengths/aux [E]."""
    offsets = self._array("offsets")
    begins = offsets[ids]
    lengths = offsets[ids + 1] - begins
    out_starts = np.cumsum(lengths) - lengths
    flat = np.repeat(begins - out_starts, lengths) + np.arange(int(lengths.sum()))
    out = {"lengths": lengths, "aux": np.asarray(self._array("aux")[ids], np.int64)}
    for name, dtype in TOKEN_ARRAYS.items():
      a = self._array(name)
      out[name] = a[flat] if a is not None else np.full(len(flat), 0 if name == "roles" else -1,
                                                         dtype)
    return out


class TokenCache:
  """A cache directory opened for reading, checked against the run's vocabulary and T."""

  def __init__(self, cache_dir: Path | str, vocab: str | None = None,
               seq_length: int | None = None):
    self.path = Path(cache_dir)
    self.meta = read_meta(self.path)
    check_matches(self.path, self.meta, vocab, seq_length)
    self.seq_length = int(self.meta["seq_length"])
    self.special = SpecialIds(**self.meta["vocab"]["special"])
    self.sources = {n: Source(self.path, n, e) for n, e in self.meta["sources"].items()}
    self.validation = {n: Source(split_dir(self.path, VALIDATION), n, e)
                       for n, e in self.meta["validation"].items()}

  def source(self, name: str, split: str = TRAIN) -> Source:
    """A source of the training data, or of the validation split."""
    sources = self.sources if split == TRAIN else self.validation
    if name not in sources:
      where = "" if split == TRAIN else f" in its {split} split"
      raise CorpusError(f"{self.path}: the token cache has no source {name!r}{where} (it has "
                        f"{sorted(sources)})")
    return sources[name]
