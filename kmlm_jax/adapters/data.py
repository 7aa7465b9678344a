"""Training pairs of the four knowledge adapters, and their batches.

Every example is a `Pair` (left text, right text, the id of the right
side's entity). The InfoNCE loss pulls the pooled left and right
representations together against the other right sides of the batch.

- EP (entity, phrase): one entity's labels in two languages drawn at
  random; only the alignment train split (an entity's l' label is never
  used when (entity, l') is an alignment dev/test pair).
- TP (triple, phrase): `label(h) + " " + label(r)` vs `label(t)`, each of
  the three languages drawn independently (code-switching), over the
  triples pretraining may see (`eval/lp/train_rows.npy`).
- ES (entity, sentence): a sentence containing an entity, pooled over the
  entity's tokens only, vs the entity's label in another language.
- TS (triple, sentence): a sentence with the object replaced by the mask
  token vs the object's label.

ES and TS read sentences generated from the training triples (the probe
templates of `kg/data/probe_templates.json` rendered with the labels, or
KMLM's `h r t.` without linkers) and/or T-REx sentence/triple alignments
(`trex.py`; the paper's TS data). With `hold_out_alignment`, no pair of any
adapter uses a label that is an alignment dev/test pair.

Randomness: example g (= step * batch + i) of source s draws from
`default_rng([seed, s, g])`, and the order of a source's atoms is a
permutation per epoch, so any step's batch can be rebuilt alone.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from kmlm_jax.errors import InputError
from kmlm_jax.kg.corpus_dir import CorpusDir
from kmlm_jax.kg.errors import KGInputError
from kmlm_jax.kg.graph import KnowledgeGraph
from kmlm_jax.kg.sentences import SOURCE_LANG

log = logging.getLogger("kmlm_jax.adapters")
SOURCES = ("ep", "tp", "es", "ts")


@dataclasses.dataclass(frozen=True)
class Side:
  """One text of a pair. span: [start, end) characters to pool over (None: the
  whole text); mask_span: characters replaced by one mask token."""

  text: str
  span: tuple[int, int] | None = None
  mask_span: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class Pair:
  left: Side
  right: Side
  key: int  # the right side's entity; other right sides with this key are not negatives


# ---------------------------------------------------------------- the KG


@dataclasses.dataclass
class AdapterCorpus:
  """What the adapters read from a `kmlm-jax kg build` directory.

  held: lang -> bool [E], True where (entity, lang) is an alignment dev/test pair.
  """

  graph: KnowledgeGraph
  train_rows: np.ndarray
  test_rows: np.ndarray
  held: dict[str, np.ndarray]
  directory: Path

  @classmethod
  def load(cls, directory: Path | str) -> "AdapterCorpus":
    directory = Path(directory)
    corpus = CorpusDir(directory)
    rows = [corpus.eval_path("lp", f"{split}_rows.npy") for split in ("train", "test")]
    for path in [corpus.graph_path] + rows:
      if not path.exists():
        raise KGInputError(f"{path}: missing (not a `kmlm-jax kg build` output directory)")
    graph = corpus.graph()
    index = {e: i for i, e in enumerate(graph.entity_ids)}
    held = {}
    for lang in graph.languages:
      mask = np.zeros(graph.num_entities, bool)
      for split in ("dev", "test"):
        for row in read_alignment(directory, lang, split, missing_ok=lang == SOURCE_LANG):
          if row["id"] not in index:
            raise KGInputError(f"{row['where']}: field 'id': {row['id']!r} is not an entity "
                               f"of {corpus.graph_path}")
          mask[index[row["id"]]] = True
      held[lang] = mask
    return cls(graph, np.load(rows[0]), np.load(rows[1]), held, directory)

  def usable(self, lang: str, hold_out: bool = True) -> np.ndarray:
    """[E] bool: entities whose `lang` label a training pair may use."""
    ok = self.graph.entity_names[lang].has_label()
    return ok & ~self.held[lang] if hold_out else ok


def read_alignment(directory: Path, lang: str, split: str, missing_ok: bool = False) -> list[dict]:
  """Rows {"id", "en", lang, "where": "FILE:LINE"} of eval/alignment/LANG.SPLIT.jsonl."""
  path = CorpusDir(directory).eval_path("alignment", f"{lang}.{split}.jsonl")
  if not path.exists():
    if missing_ok:
      return []
    raise KGInputError(f"{path}: missing (alignment split of `kmlm-jax kg build`)")
  try:
    lines = path.read_text(encoding="utf-8-sig").split("\n")
  except UnicodeDecodeError as e:
    raise KGInputError(f"{path}: not UTF-8 text ({e})") from None
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      row = {"id": row["id"], "en": row["en"], lang: row[lang], "where": f"{path}:{number}"}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise KGInputError(f"{path}:{number}: bad alignment row ({type(e).__name__}: {e})") from None
    bad = [k for k in ("id", "en", lang) if not isinstance(row[k], str) or not row[k]]
    if bad:
      raise KGInputError(f"{path}:{number}: field {bad[0]!r}: expected a non-empty string, got "
                         f"{row[bad[0]]!r}")
    rows.append(row)
  return rows


# ---------------------------------------------------------------- sentences


def render(template: str, x: str, y: str) -> tuple[str, tuple[int, int], tuple[int, int]]:
  """A `[X] ... [Y]` template with both slots filled; returns (text, span of x, span of y)."""
  text, spans = "", {}
  for piece in re.split(r"(\[X\]|\[Y\])", template):
    if piece in ("[X]", "[Y]"):
      value = x if piece == "[X]" else y
      spans[piece] = (len(text), len(text) + len(value))
      piece = value
    text += piece
  if set(spans) != {"[X]", "[Y]"}:
    raise InputError(f"template {template!r} needs both [X] and [Y]")
  return text, spans["[X]"], spans["[Y]"]


@dataclasses.dataclass(frozen=True)
class Sentence:
  """A sentence stating one triple: text and the character spans of head and tail."""

  text: str
  head_span: tuple[int, int]
  tail_span: tuple[int, int]
  head: int  # entity index, or a key for entities outside the graph
  tail: int
  lang: str


def generated_sentences(corpus: AdapterCorpus, style: str, hold_out: bool) -> list[Sentence]:
  """One sentence per (training triple, language) in which its names are usable."""
  if style == "none":
    return []
  from kmlm_jax.kg.evalsets import probe_templates
  g = corpus.graph
  templates = probe_templates() if style == "templates" else {}
  out = []
  for lang in g.languages:
    ents, rels = g.entity_names[lang].labels, g.relation_names[lang].labels
    ok = corpus.usable(lang, hold_out)
    for row in corpus.train_rows:
      h, r, t = (int(v) for v in g.triples[row])
      if not (ok[h] and ok[t] and rels[r]):
        continue
      template = templates.get(g.relation_ids[r], {}).get(lang) or f"[X] {rels[r]} [Y]."
      text, hs, ts = render(template, ents[h], ents[t])
      out.append(Sentence(text, hs, ts, h, t, lang))
  return out


def trex_sentences(paths: Sequence[str], corpus: AdapterCorpus,
                   skip_bad: bool = False) -> list[Sentence]:
  """T-REx alignments (files or glob patterns) as English sentences; entities outside the
  graph get keys >= E."""
  from kmlm_jax.adapters.trex import read_trex
  index = {e: i for i, e in enumerate(corpus.graph.entity_ids)}
  outside: dict[str, int] = {}

  def key(qid: str, surface: str) -> int:
    if qid in index:
      return index[qid]
    name = qid or f"surface:{surface}"
    return outside.setdefault(name, corpus.graph.num_entities + len(outside))

  files = []
  for pattern in paths:
    matched = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    if not matched:
      raise KGInputError(f"{pattern}: no T-REx file matches")
    files += matched
  out = []
  for path in files:
    found = read_trex(path, skip_bad=skip_bad)
    log.info("%s: %d alignments from %d documents; skipped: %d documents %s, triples %s",
             path, len(found.alignments), found.stats.records_kept, found.stats.num_skipped,
             dict(found.stats.skipped), dict(found.skipped_triples))
    out += [Sentence(a.sentence, a.subject_span, a.object_span, key(a.subject_id, a.subject),
                     key(a.object_id, a.object), SOURCE_LANG) for a in found.alignments]
  return out


# ---------------------------------------------------------------- sources


@dataclasses.dataclass
class Source:
  """`size` atoms; `make(atom, rng) -> Pair`."""

  name: str
  size: int
  make: Callable[[int, np.random.Generator], Pair]


def _usable_langs(corpus: AdapterCorpus, hold_out: bool) -> tuple[list[str], np.ndarray]:
  """Languages and [E, nlang] bool of usable entity labels."""
  langs = list(corpus.graph.languages)
  return langs, np.stack([corpus.usable(l, hold_out) for l in langs], axis=1)


def ep_source(corpus: AdapterCorpus) -> Source:
  g = corpus.graph
  langs, ok = _usable_langs(corpus, hold_out=True)  # always the train split only
  atoms = np.flatnonzero(ok.sum(1) >= 2)

  def make(i, rng):
    e = int(atoms[i])
    a, b = rng.choice(np.flatnonzero(ok[e]), 2, replace=False)
    return Pair(Side(g.entity_label(e, langs[a])), Side(g.entity_label(e, langs[b])), e)

  return Source("ep", len(atoms), make)


def tp_source(corpus: AdapterCorpus, hold_out: bool) -> Source:
  g = corpus.graph
  langs, ok = _usable_langs(corpus, hold_out)
  rel_ok = np.stack([g.relation_names[l].has_label() for l in langs], axis=1)
  t = g.triples[corpus.train_rows]
  keep = ok[t[:, 0]].any(1) & rel_ok[t[:, 1]].any(1) & ok[t[:, 2]].any(1)
  rows = t[keep]

  def make(i, rng):
    h, r, o = (int(v) for v in rows[i])
    lh, lr, lo = (langs[rng.choice(np.flatnonzero(m))] for m in (ok[h], rel_ok[r], ok[o]))
    left = f"{g.entity_label(h, lh)} {g.relation_label(r, lr)}"
    return Pair(Side(left), Side(g.entity_label(o, lo)), o)

  return Source("tp", len(rows), make)


def es_source(corpus: AdapterCorpus, sentences: list[Sentence], hold_out: bool) -> Source:
  g = corpus.graph
  langs, ok = _usable_langs(corpus, hold_out)

  def make(i, rng):
    s = sentences[i]
    use_head = bool(rng.integers(2))
    entity, span = (s.head, s.head_span) if use_head else (s.tail, s.tail_span)
    label = s.text[span[0]:span[1]]  # the mention, for entities without a usable label
    if entity < g.num_entities and ok[entity].any():
      # Another language's label when there is one; else the only usable one is s.lang's.
      others = [j for j in np.flatnonzero(ok[entity]) if langs[j] != s.lang]
      label = g.entity_label(entity, langs[rng.choice(others)] if others else s.lang)
    return Pair(Side(s.text, span=span), Side(label), entity)

  return Source("es", len(sentences), make)


def ts_source(sentences: list[Sentence]) -> Source:
  def make(i, rng):
    s = sentences[i]
    b, e = s.tail_span
    return Pair(Side(s.text, mask_span=s.tail_span), Side(s.text[b:e]), s.tail)

  return Source("ts", len(sentences), make)


def build_sources(corpus: AdapterCorpus, names: Sequence[str], *, sentences: str = "templates",
                  trex: Sequence[str] = (), hold_out: bool = True,
                  trex_skip_bad: bool = False) -> dict[str, Source]:
  """The data source of each adapter name (ep / tp / es / ts)."""
  unknown = [n for n in names if n not in SOURCES]
  if unknown:
    raise InputError(f"no data source for adapters {unknown}; adapter names must be among "
                     f"{SOURCES}")
  text = []
  if any(n in ("es", "ts") for n in names):
    text = generated_sentences(corpus, sentences, hold_out) + trex_sentences(
        trex, corpus, skip_bad=trex_skip_bad)
  make = {"ep": lambda: ep_source(corpus), "tp": lambda: tp_source(corpus, hold_out),
          "es": lambda: es_source(corpus, text, hold_out), "ts": lambda: ts_source(text)}
  return {name: make[name]() for name in names}


# ---------------------------------------------------------------- tokens


class TextEncoder:
  """Sides -> fixed-length ids, attention mask and pooling weights.

  ids are `<s> pieces </s>` (or `[CLS] ... [SEP]`) padded to `length`.
  Pooling weights: a span's tokens; else every real token ("masked") or
  all `length` positions, padding included ("unmasked", the original).
  A long text keeps a window of tokens that contains its span or mask.
  """

  def __init__(self, vocab, length: int, pooling: str = "masked"):
    self.vocab, self.length, self.pooling = vocab, length, pooling
    self._cache: dict[Side, tuple] = {}

  def _pieces(self, side: Side) -> tuple[list[int], list[int]]:
    """(ids, indices of the tokens to keep inside the window)."""
    v = self.vocab
    if side.mask_span is not None:
      b, e = side.mask_span
      before = v.encode(side.text[:b].rstrip()) if side.text[:b].strip() else []
      after = v.encode(side.text[e:]) if side.text[e:].strip() else []
      return before + [v.mask_id] + after, [len(before)]
    if side.span is None:
      return v.encode(side.text), []
    ids, begins, ends = v.encode_with_offsets(side.text)
    b, e = side.span
    inside = [i for i, (tb, te) in enumerate(zip(begins, ends)) if tb < e and te > b]
    if not inside:
      raise InputError(f"span {side.span} of {side.text!r} covers no token")
    return ids, inside

  def encode(self, side: Side) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids [T] int32, mask [T] int32, pool [T] float32)."""
    hit = self._cache.get(side)
    if hit is not None:
      return hit
    ids, keep = self._pieces(side)
    room = self.length - 2
    start = 0
    if keep and keep[-1] >= room:
      start = min(max(keep[0], keep[-1] - room + 1), max(0, len(ids) - room))
    ids = ids[start:start + room]
    v, t = self.vocab, self.length
    row = np.full(t, v.pad_id, np.int32)
    row[:len(ids) + 2] = [v.bos_id, *ids, v.eos_id]
    mask = (np.arange(t) < len(ids) + 2).astype(np.int32)
    if side.span is not None:
      pool = np.zeros(t, np.float32)
      pool[[k - start + 1 for k in keep if 0 <= k - start < room]] = 1.0
    elif self.pooling == "unmasked":
      pool = np.ones(t, np.float32)
    else:
      pool = mask.astype(np.float32)
    out = (row, mask, pool)
    if len(self._cache) < 200_000:
      self._cache[side] = out
    return out

  def encode_sides(self, sides: Iterable[Side]) -> dict[str, np.ndarray]:
    """{"ids", "mask", "pool"} [N, T]."""
    rows = [self.encode(s) for s in sides]
    return {k: np.stack([r[i] for r in rows]) for i, k in enumerate(("ids", "mask", "pool"))}


class PairBatches:
  """Batches of one source: `batch(step)` depends only on (seed, source id, step)."""

  def __init__(self, source: Source, source_id: int, batch_size: int, seed: int,
               encoder: TextEncoder):
    if source.size == 0:
      raise InputError(f"adapter {source.name!r} has no training pairs (check the corpus, "
                       "data.sentences and data.trex)")
    self.source, self.source_id, self.batch_size, self.seed = source, source_id, batch_size, seed
    self.encoder = encoder
    self._perms: dict[int, np.ndarray] = {}

  def _atom(self, g: int) -> int:
    epoch, i = divmod(g, self.source.size)
    if epoch not in self._perms:
      self._perms = {epoch: np.random.default_rng(
          [self.seed, self.source_id, epoch, 1]).permutation(self.source.size)}
    return int(self._perms[epoch][i])

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """{left,right}_{ids,mask,pool} [B, T] and keys [B] of step `step`."""
    first = step * self.batch_size
    pairs = [self.source.make(self._atom(g), np.random.default_rng([self.seed, self.source_id, g]))
             for g in range(first, first + self.batch_size)]
    out = {f"{side}_{k}": v for side in ("left", "right")
           for k, v in self.encoder.encode_sides([getattr(p, side) for p in pairs]).items()}
    out["keys"] = np.asarray([p.key for p in pairs], np.int32)
    return out
