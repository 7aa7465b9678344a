"""Cosine-retrieval evaluation of the adapters against the frozen base.

- Entity alignment (WK3L style): for each language l', the English labels
  of the alignment split's pairs are queries and the l' labels of the same
  split are the candidates; the answer is the same entity.
- Knowledge-graph completion (DBP5L style): for each held-out test triple
  (h, r, t) (`eval/lp/test_rows.npy`) labelled in language l, the query is
  `label(h) + " " + label(r)`, the candidates are all entity labels of l,
  the answer is t. Filtered (default): other known tails of (h, r) are
  left out of the ranking.

The originals' released sets replace these (`kmlm-jax adapters eval --dbp5l DIR
--wk3l60 DIR`; readers in `kmlm_jax.kg.released`), as yifan-h/Multilingual_Space
`exp/kge/tasks.py` uses them but with 1-based ranks and without its fine-tuning
on the train split:
- DBP5L KG completion, per language: each test triple's `h + " " + r` against
  the distinct tails of that language's test file; filtered (default) leaves
  out the other tails of (h, r) known from its train and test files.
- WK3L60 alignment, per pair file (`en_de`): each test pair's source against
  the distinct targets of the test file.

Representations are the pooled (masked or unmasked mean) final hidden
states, compared by cosine. Ranks, Hits@1, Hits@10 and MRR come from
`kmlm_jax.evaluation.metrics` (1-based, ties shared, fractions; the table
prints percent), per language and averaged over languages.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from kmlm_jax.adapters import data as data_lib
from kmlm_jax.adapters import train as train_lib
from kmlm_jax.adapters.config import AdapterExperimentConfig
from kmlm_jax.config import ModelConfig
from kmlm_jax.evaluation import metrics, progress
from kmlm_jax.experiment import ConfigError
from kmlm_jax.kg.sentences import SOURCE_LANG

METRICS = ("hits@1", "hits@10", "mrr")


@dataclasses.dataclass
class RetrievalSet:
  """Queries against candidates: answers [Q] index into candidates; exclude: [Q] lists of
  candidate indices left out of query q's ranking (filtered setting; empty: none)."""

  queries: list[str]
  candidates: list[str]
  answers: np.ndarray
  exclude: list[list[int]] = dataclasses.field(default_factory=list)


def score(scores: np.ndarray, s: RetrievalSet) -> dict[str, float]:
  """Hits@1, Hits@10, MRR (fractions) and the query count of one retrieval set."""
  filtered = metrics.filter_mask(s.answers, scores.shape[1], *metrics.pairs(s.exclude))
  return metrics.summarize(metrics.ranks(scores, s.answers, filtered), ks=(1, 10))


def alignment_sets(corpus: data_lib.AdapterCorpus, split: str) -> dict[str, RetrievalSet]:
  out = {}
  for lang in corpus.graph.languages:
    if lang == SOURCE_LANG:
      continue
    rows = data_lib.read_alignment(corpus.directory, lang, split)
    if rows:
      out[lang] = RetrievalSet([r["en"] for r in rows], [r[lang] for r in rows],
                               np.arange(len(rows)))
  return out


def completion_sets(corpus: data_lib.AdapterCorpus, filtered: bool) -> dict[str, RetrievalSet]:
  g = corpus.graph
  tails = collections.defaultdict(set)
  for h, r, t in g.triples:
    tails[int(h), int(r)].add(int(t))
  out = {}
  for lang in g.languages:
    ents, rels = g.entity_names[lang].labels, g.relation_names[lang].labels
    candidates = np.flatnonzero(g.entity_names[lang].has_label())
    position = {int(e): i for i, e in enumerate(candidates)}
    queries, answers, exclude = [], [], []
    for row in corpus.test_rows:
      h, r, t = (int(v) for v in g.triples[row])
      if not (ents[h] and rels[r] and ents[t]):
        continue
      queries.append(f"{ents[h]} {rels[r]}")
      answers.append(position[t])
      exclude.append(sorted(position[o] for o in tails[h, r] if o != t and o in position)
                     if filtered else [])
    if queries:
      out[lang] = RetrievalSet(queries, [ents[e] for e in candidates],
                               np.asarray(answers), exclude)
  return out


def dbp5l_sets(splits: dict, filtered: bool) -> dict[str, RetrievalSet]:
  """lang -> the released DBP5L test queries (`kmlm_jax.kg.released.read_dbp5l`)."""
  out = {}
  for lang, split in splits.items():
    if not split.test:
      continue
    candidates = list(dict.fromkeys(t for _, _, t, _ in split.test))
    position = {name: i for i, name in enumerate(candidates)}
    tails = collections.defaultdict(set)
    for h, r, t in [*split.train, *(row[:3] for row in split.test)]:
      tails[h, r].add(t)
    exclude = [sorted(position[o] for o in tails[h, r] if o != t and o in position)
               if filtered else [] for h, r, t, _ in split.test]
    out[lang] = RetrievalSet([f"{h} {r}" for h, r, _, _ in split.test], candidates,
                             np.asarray([position[t] for _, _, t, _ in split.test]), exclude)
  return out


def wk3l60_sets(pairs: dict) -> dict[str, RetrievalSet]:
  """"L1-L2" -> the released WK3L60 test pairs (`kmlm_jax.kg.released.read_wk3l60`)."""
  out = {}
  for pair, splits in pairs.items():
    rows = splits.get("test", [])
    if rows:
      candidates = list(dict.fromkeys(target for _, target, _ in rows))
      position = {name: i for i, name in enumerate(candidates)}
      out[pair.replace("_", "-")] = RetrievalSet(
          [source for source, _, _ in rows], candidates,
          np.asarray([position[target] for _, target, _ in rows]))
  return out


def released_sets(config: AdapterExperimentConfig, dbp5l: str | None,
                  wk3l60: str | None) -> tuple[dict, dict]:
  """({task: {lang: RetrievalSet}}, {task: source}) of the released sets given."""
  from kmlm_jax.kg import released
  sets, sources = {}, {}
  if dbp5l:
    sets["completion"] = dbp5l_sets(released.read_dbp5l(dbp5l), config.eval.filtered)
    sources["completion"] = f"DBP5L {dbp5l}, test split"
  if wk3l60:
    sets["alignment"] = wk3l60_sets(released.read_wk3l60(wk3l60))
    sources["alignment"] = f"WK3L60 {wk3l60}, test split"
  return sets, sources


def embed(trainer: train_lib.AdapterTrainer, params, active, texts: list[str],
          encoder: data_lib.TextEncoder, batch_size: int) -> dict[str, np.ndarray]:
  """text -> unit-norm embedding [D] for every distinct text.

  Texts go in order of length, in batches padded to `batch_size` rows and,
  with masked pooling, cut to the next multiple of 8 tokens that holds the
  batch's longest (a few compiled shapes instead of all rows at full
  length; padding does not change a masked mean). Unmasked pooling keeps
  the full length, since it averages the padding too.
  """
  unique = list(dict.fromkeys(texts))
  compiling = None if trainer.has_encoder(active) else f"the {active or 'base'} encoder"
  fn = trainer.encoder(active)
  ways = trainer.partitioner.batch_ways()
  batch_size = -(-batch_size // ways) * ways
  arrays = encoder.encode_sides(map(data_lib.Side, unique + [""]))  # "" pads a short batch
  lengths = arrays["mask"][:-1].sum(axis=1)
  order = np.argsort(lengths, kind="stable")
  full = arrays["ids"].shape[1]
  out = {}
  with progress.bar(len(unique), f"embedding ({active or 'base'})", "text", compiling) as bar:
    for start in range(0, len(unique), batch_size):
      rows = order[start:start + batch_size]
      width = full if encoder.pooling == "unmasked" else min(
          full, -(-int(lengths[rows].max()) // 8) * 8)
      padded = np.concatenate([rows, np.full(batch_size - len(rows), len(unique))])
      batch = [arrays[k][padded, :width] for k in ("ids", "mask", "pool")]
      emb = np.asarray(jax.device_get(fn(params, *batch)), np.float32)
      out.update(zip((unique[i] for i in rows), emb))
      bar.update(len(rows))
  return out


def check_base(meta: dict, setup: train_lib.Setup, where: Path) -> None:
  """Refuses adapters trained on a base of another architecture than this run's, naming
  the fields that differ (before anything is built)."""
  trained = ModelConfig(**meta["model"]).architecture()
  here = setup.model_config.architecture()
  diff = [f"{k}={trained.get(k)!r} (this run's base: {here.get(k)!r})"
          for k in sorted(set(trained) | set(here))
          if trained.get(k) != here.get(k) and k != "use_mlm_head"]  # the base has no head
  if diff:
    raise ConfigError(f"{where}: the adapters were trained on a base of another architecture: "
                      f"{', '.join(diff)}; evaluate with the training run's init_from and model")


def evaluate(config: AdapterExperimentConfig, workdir: Path | str, *,
             dbp5l: str | None = None, wk3l60: str | None = None) -> dict:
  """Scores every mode of `config.eval.modes`; writes WORKDIR/eval/results.{json,md}.
  `dbp5l` / `wk3l60`: released folders whose test sets replace the corpus's completion /
  alignment sets (read first: a malformed file fails before any model is built)."""
  workdir = Path(workdir)
  released, sources = released_sets(config, dbp5l, wk3l60)
  partitioner = train_lib.make_partitioner(config)
  trained = None
  if any(m != "base" for m in config.eval.modes):
    trained, meta = train_lib.load_adapters(workdir / "adapters")
  setup = train_lib.resolve(config, workdir, load_base=False)
  if trained is not None:
    check_base(meta, setup, workdir / "adapters" / "adapter_config.json")
  train_lib.load_base_params(setup)
  trainer = train_lib.AdapterTrainer(setup, partitioner)
  params = train_lib.init_params(setup.model_config, config.adapters, config.train.seed,
                                 setup.base_params)
  if trained is not None:
    if meta.get("base_fingerprint") != train_lib.fingerprint(params["encoder"]):
      raise ConfigError("the adapters were trained on another base (its fingerprint differs); "
                        "evaluate with the training config (same init_from and train.seed)")
    params.update(trained)
  train_lib.check_structure(params, trainer.abstract_params)
  params = trainer.place(params)
  make = {"alignment": lambda: alignment_sets(setup.corpus, config.eval.split),
          "completion": lambda: completion_sets(setup.corpus, config.eval.filtered)}
  sets = {t: f() for t, f in make.items() if t in config.eval.tasks and t not in released}
  sets.update(released)
  texts = [t for by_lang in sets.values() for s in by_lang.values()
           for t in s.queries + s.candidates]
  encoder = data_lib.TextEncoder(setup.vocab, config.data.seq_length, config.data.pooling)
  results: dict = {"base": setup.base, "pooling": config.data.pooling, "split": config.eval.split,
                   "filtered": config.eval.filtered, "sources": sources, "scores": {}}
  for mode in config.eval.modes:
    progress.phase(f"mode {mode}: embedding {len(set(texts))} texts of "
                   f"{', '.join(sets)} ({config.eval.split} split)")
    table = embed(trainer, params, None if mode == "base" else mode, texts, encoder,
                  config.eval.batch_size)
    for task, by_lang in sets.items():
      for lang, s in by_lang.items():
        q = np.stack([table[t] for t in s.queries])
        c = np.stack([table[t] for t in s.candidates])
        results["scores"].setdefault(task, {}).setdefault(mode, {})[lang] = score(q @ c.T, s)
  results["table"] = table_markdown(results)
  out = workdir / "eval"
  out.mkdir(parents=True, exist_ok=True)
  (out / "results.json").write_text(json.dumps(results, indent=1))
  (out / "results.md").write_text(results["table"] + "\n")
  return results


def table_markdown(results: dict) -> str:
  """Rows task / metric / mode, columns languages and their average (percent)."""
  lines = []
  for task, by_mode in results["scores"].items():
    langs = sorted({l for m in by_mode.values() for l in m})
    where = results.get("sources", {}).get(task, f"{results['split']} split")
    lines += [f"{task} ({where}"
              + (", filtered" if task == "completion" and results["filtered"] else "") + ")", "",
              "| metric | mode | " + " | ".join(langs) + " | avg. |",
              "|---|---|" + "---|" * (len(langs) + 1)]
    for metric in METRICS:
      for mode, by_lang in by_mode.items():
        values = [by_lang[l][metric] for l in langs]
        cells = [f"{100 * v:.1f}" for v in values] + [f"{100 * np.nanmean(values):.1f}"]
        lines.append(f"| {metric} | {mode} | " + " | ".join(cells) + " |")
    counts = [str(next(iter(by_mode.values()))[l]["count"]) for l in langs]
    lines += ["| queries | | " + " | ".join(counts) + " | |", ""]
  return "\n".join(lines).rstrip()
