"""Validation during training: MLM loss per stream on held-out batches, and the knowledge.

Every `train.eval_every` steps the train loop calls a `Validator` (built once
per run: the batches, the evaluation items, the tokenizer and the jitted
scorers) with the current parameters, as they lie on the mesh. It returns
flat scalars named `validation/...`:

- `validation/{stream}/loss` and `/accuracy` for each loss term the mixture
  trains (`losses.TERM_NAMES`: mlm, knowledge, reasoning, causal) over the
  `train.eval_batches` batches of `training.data.make_validation_batches`, and
  `validation/loss`, the training loss's weighted total (`L_MLM + alpha (L_K +
  L_L)` + the causal term) with each term's mean over all validation batches;
- the knowledge metrics on the first `train.eval_knowledge_examples` items of
  the evaluation sets of `data.corpus_dir` (the embedded sample when unset),
  taken round-robin over languages: for KMLM runs `validation/xlr/accuracy`
  (zero-shot XLR, `zero_shot.xlr_accuracy`, on the XLR *dev* split: the test
  split never picks checkpoints) and `validation/probe_rank/accuracy` (cloze
  probes ranked among the gold object and up to 10 objects of the relation,
  `zero_shot.probe_accuracy`); for Prix-LM runs (`data.mixture` prixlm*)
  `validation/lp/hits@1` (filtered, trie-constrained beam search with
  `LP_BEAMS` beams, `lp_eval.prixlm_ranks`). Each is the mean over languages.
  `kg build` writes the probes and the link-prediction queries from one
  held-out split (`eval/probes.jsonl`, `eval/lp/LANG.test.tsv`, no dev
  split): their validation figures come from the first items of the same
  files `kmlm-jax eval` reports on. Synthetic runs have no knowledge metrics.

`BestTracker` follows the `train.keep_best` metric (names ending in "loss" are
minimised, the others maximised) for keep-best and early stopping.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from typing import Any, Sequence

import jax
import numpy as np

from kmlm_jax.config import ExperimentConfig
from kmlm_jax.data import mixtures
from kmlm_jax.errors import InputError
from kmlm_jax.training import data as data_lib
from kmlm_jax.training.losses import TERM_NAMES, term_coefficients

log = logging.getLogger("kmlm_jax.training")

PREFIX = "validation"
LP_BEAMS = 10  # beams of the validation link prediction (Hits@1 only)
# Rows per scorer batch: its logits are [rows, 24 masks, vocabulary] (0.4 GB in fp32 for
# XLM-R's 250k tokens at 16 rows).
SCORER_BATCH = 16
# The knowledge metric of each evaluation task.
KNOWLEDGE_METRICS = {"xlr": f"{PREFIX}/xlr/accuracy", "probe_rank": f"{PREFIX}/probe_rank/accuracy",
                     "lp": f"{PREFIX}/lp/hits@1"}


# ------------------------------------------------------------------------------ names


def stream_terms(config: ExperimentConfig) -> tuple[str, ...]:
  """The loss terms (`TERM_NAMES`) the run's mixture trains."""
  data = config.data
  if data.mixture == "synthetic":
    return TERM_NAMES[:3]  # SyntheticBatches spreads loss over the three KMLM streams
  from kmlm_jax.data.cache import rule_of
  rules = {rule_of("text.en" if m == "text" else m)
           for m in mixtures.members(data.mixture, data_lib.mixture_rates(data))}
  return tuple(name for i, name in enumerate(TERM_NAMES) if i in rules)


def knowledge_tasks(config: ExperimentConfig) -> tuple[str, ...]:
  """The evaluation tasks of the knowledge metrics ("xlr", "probe_rank" or "lp"), or none."""
  if config.data.mixture == "synthetic" or not config.train.eval_knowledge_examples:
    return ()
  return ("lp",) if config.data.mixture.startswith("prixlm") else ("xlr", "probe_rank")


def metric_names(config: ExperimentConfig) -> list[str]:
  """Every scalar name validation produces for `config`."""
  names = [f"{PREFIX}/loss"]
  for term in stream_terms(config):
    names += [f"{PREFIX}/{term}/loss", f"{PREFIX}/{term}/accuracy"]
  return names + [KNOWLEDGE_METRICS[t] for t in knowledge_tasks(config)]


def check_keep_best(config: ExperimentConfig) -> None:
  """Raises an `InputError` when `train.keep_best` names a metric the run will not produce."""
  metric = config.train.keep_best
  if metric and metric not in metric_names(config):
    raise InputError(f"train.keep_best: {metric!r} is not a validation metric of this run; "
                     f"known: {', '.join(metric_names(config))}")


def check_knowledge_inputs(config: ExperimentConfig) -> None:
  """Raises an `InputError` naming the file when `data.corpus_dir` lacks an evaluation file
  the knowledge metrics read (the embedded sample is built with all of them)."""
  from kmlm_jax.kg.corpus_dir import CorpusDir
  tasks = knowledge_tasks(config) if config.train.eval_every else ()
  if not tasks or not config.data.corpus_dir:
    return
  corpus = CorpusDir(config.data.corpus_dir)
  needed = []
  if "xlr" in tasks:
    needed += [corpus.eval_path("xlr", "dev.jsonl"), corpus.graph_path]
  if "probe_rank" in tasks:
    needed += [corpus.eval_path("probes.jsonl")]
  if "lp" in tasks:
    needed += [corpus.eval_path("lp", f"{lang}.{kind}.tsv") for lang in corpus.languages
               for kind in ("entities", "test", "filter")]
  missing = [str(p) for p in needed if not p.is_file()]
  if missing:
    more = f" and {len(missing) - 1} more files" if len(missing) > 1 else ""
    raise InputError(f"train.eval_knowledge_examples: {missing[0]}{more} missing (validation "
                     "reads them); rebuild data.corpus_dir with `kmlm-jax kg build`, or set "
                     "train.eval_knowledge_examples=0")


def rank_key(metric: str, value: float | None, step: int) -> tuple[float, int]:
  """A sort key, larger = better: the metric's value (minimised for names ending in "loss";
  missing or NaN worst), then the earlier step (ties keep the first checkpoint that reached
  the value)."""
  if value is None or math.isnan(value):
    return (-math.inf, -step)
  return (-value if metric.endswith("loss") else value, -step)


@dataclasses.dataclass
class BestTracker:
  """The best value of `metric` so far, its step, and the validations since it."""

  metric: str
  value: float | None = None
  step: int | None = None
  since_best: int = 0

  def update(self, step: int, results: dict) -> bool:
    """Takes one validation's results; returns whether they are the new best."""
    if self.metric not in results:
      raise InputError(f"train.keep_best: validation at step {step} produced no "
                       f"{self.metric!r} (the validation batches hold no loss position of "
                       f"that stream); it produced {', '.join(sorted(results))}")
    value = float(results[self.metric])
    if rank_key(self.metric, value, step) > rank_key(self.metric, self.value, step):
      self.value, self.step, self.since_best = value, step, 0
      return True
    self.since_best += 1
    return False

  def meta(self) -> dict:
    """What a checkpoint's meta keeps of it (JSON)."""
    return dataclasses.asdict(self)

  @classmethod
  def from_meta(cls, metric: str, meta: dict | None) -> "BestTracker":
    """The tracker of a resumed run (fresh when the checkpoint followed another metric)."""
    saved = (meta or {}).get("best")
    if not saved:
      return cls(metric)
    if saved.get("metric") != metric:
      log.warning("train.keep_best changed from %r to %r on resume: the best so far and the "
                  "early-stop count start again", saved.get("metric"), metric)
      return cls(metric)
    return cls(metric, saved.get("value"), saved.get("step"), int(saved.get("since_best", 0)))


# ------------------------------------------------------------------------------ validator


class Validator:
  """`validator(params) -> {name: value}` (see the module docstring); built once per run."""

  def __init__(self, config: ExperimentConfig, trainer):
    self.config, self.trainer = config, trainer
    self.batches = data_lib.make_validation_batches(
        config.data, config.model.vocab_size, *trainer.partitioner.host_share,
        config.train.eval_batches, build=jax.process_index() == 0)
    self.knowledge = KnowledgeMetrics.build(config, trainer.task.graphdef) \
        if knowledge_tasks(config) else None

  def __call__(self, params) -> dict[str, float]:
    out = stream_metrics(self.trainer, params, self.batches, self.config.train.alpha)
    if self.knowledge is not None:
      out.update(self.knowledge(params))
    return out


def stream_metrics(trainer, params, batches: Sequence[dict], alpha: float) -> dict[str, float]:
  """Loss and accuracy per stream over `batches` (each term's mean over all of its loss
  positions) and their weighted total as the training loss defines it."""
  sums = np.zeros((2, len(TERM_NAMES)))
  counts = np.zeros(len(TERM_NAMES))
  for batch in batches:
    m = jax.device_get(trainer.evaluate(params, batch))
    sums += np.stack([m["term_loss"], m["term_accuracy"]]) * m["count"]
    counts += m["count"]
  means = sums / np.maximum(counts, 1.0)
  out = {f"{PREFIX}/loss": float((np.asarray(term_coefficients(alpha)) * means[0]).sum())}
  for i, name in enumerate(TERM_NAMES):
    if counts[i]:
      out[f"{PREFIX}/{name}/loss"] = float(means[0, i])
      out[f"{PREFIX}/{name}/accuracy"] = float(means[1, i])
  return out


def round_robin(items: Sequence[Any], n: int, lang=lambda item: item["lang"]) -> list:
  """The first `n` items taking one of each language in turn (languages in order of first
  appearance, items in file order)."""
  queues: dict[str, list] = {}
  for item in items:
    queues.setdefault(lang(item), []).append(item)
  gap = object()
  turns = itertools.chain.from_iterable(itertools.zip_longest(*queues.values(), fillvalue=gap))
  return list(itertools.islice((item for item in turns if item is not gap), n))


@dataclasses.dataclass
class KnowledgeMetrics:
  """The knowledge metrics' items, tokenizer and jitted scorers of one run."""

  tasks: tuple[str, ...]
  graphdef: Any
  vocab: Any
  corpus: Any
  graph: Any = None
  xlr_items: list = dataclasses.field(default_factory=list)
  probes: list = dataclasses.field(default_factory=list)
  lp_splits: dict = dataclasses.field(default_factory=dict)
  scorers: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def build(cls, config: ExperimentConfig, graphdef) -> "KnowledgeMetrics":
    """Reads the evaluation items and the tokenizer, and sets up the scorers (compiled at
    their first call). A missing or malformed file raises an `InputError` naming it."""
    from kmlm_jax.evaluation import lp_eval, readers, zero_shot
    from kmlm_jax.kg.corpus_dir import CorpusDir
    from kmlm_jax.text.vocab import default_vocab_path, load_vocab
    tasks, n = knowledge_tasks(config), config.train.eval_knowledge_examples
    corpus = CorpusDir(config.data.corpus_dir) if config.data.corpus_dir else CorpusDir.sample()
    self = cls(tasks, graphdef, load_vocab(config.data.vocab or default_vocab_path()), corpus)
    room = config.model.max_length
    if "xlr" in tasks:
      path = corpus.eval_path("xlr", "dev.jsonl")
      self.xlr_items = round_robin([i.to_dict() for i in readers.read_xlr(path, num_choices=None)],
                                   n)
      if not self.xlr_items or any("triples" not in i or "question_triple" not in i
                                   for i in self.xlr_items):
        raise InputError(f"{path}: no items with 'triples' and 'question_triple' (zero-shot "
                         "XLR validation reads the items `kmlm-jax kg build` writes)")
      self.scorers["xlr"] = zero_shot.Scorer(graphdef, None, self.vocab, length=min(128, room),
                                             batch=SCORER_BATCH)
    if "probe_rank" in tasks:
      path = corpus.eval_path("probes.jsonl")
      self.probes = round_robin([q.to_dict() for q in readers.read_probes(path)], n)
      if not self.probes:
        raise InputError(f"{path}: no probes (validation/probe_rank/accuracy needs some)")
      self.scorers["probe_rank"] = zero_shot.Scorer(graphdef, None, self.vocab,
                                                    length=min(48, room), batch=SCORER_BATCH)
    if tasks != ("lp",):
      self.graph = corpus.graph()
    if "lp" in tasks:
      langs = corpus.languages
      quota = {lang: n // len(langs) + (k < n % len(langs)) for k, lang in enumerate(langs)}
      self.lp_splits = {lang: lp_eval.read_split(corpus.path, lang, q)
                        for lang, q in quota.items() if q}
    return self

  def __call__(self, params) -> dict[str, float]:
    """The knowledge metrics of `params` (a nested dict of arrays, sharded or not)."""
    from kmlm_jax.evaluation import zero_shot
    params = _addressable(params)
    for scorer in self.scorers.values():  # the run's jitted scorers, now on these params
      scorer.params = params
    out = {}
    try:
      if "xlr" in self.tasks:
        out[KNOWLEDGE_METRICS["xlr"]] = zero_shot.xlr_accuracy(
            self.scorers["xlr"], self.graph, self.xlr_items)["avg"]
      if "probe_rank" in self.tasks:
        out[KNOWLEDGE_METRICS["probe_rank"]] = zero_shot.probe_accuracy(
            self.scorers["probe_rank"], self.graph, self.probes, max_distractors=10)["avg"]
      if "lp" in self.tasks:
        out[KNOWLEDGE_METRICS["lp"]] = self._hits_at_1(params)
    finally:
      for scorer in self.scorers.values():  # no reference to donated state buffers
        scorer.params = None
    return out

  def _hits_at_1(self, params) -> float:
    from flax import nnx

    from kmlm_jax.evaluation import link_prediction as lp
    from kmlm_jax.evaluation import lp_eval
    model = nnx.merge(self.graphdef, params)
    hits = []
    for lang, split in self.lp_splits.items():
      ranks, _ = lp_eval.prixlm_ranks(model, self.vocab, self.corpus.path, lang,
                                      num_beams=LP_BEAMS, batch_size=len(split.queries),
                                      split=split)
      hits.append(lp.metrics(ranks)["hits@1"])
    return float(np.mean(hits))


def _addressable(params):
  """`params` usable by the evaluation's jitted functions: as they are on one process
  (sharded over its devices), gathered to every host on several."""
  if jax.process_count() == 1:
    return params
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(params, tiled=True)
