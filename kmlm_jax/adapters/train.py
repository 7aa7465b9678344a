"""Training the knowledge adapters, then the fusion, on a frozen encoder.

Parameters are one pure-dict tree `{"encoder", "adapters", "fusion"}` (the
`nnx.Param` state of `AdaptedEncoder`), placed on the mesh by their logical
axes. Each stage is an `AdapterTask` run by the one trainer
(`kmlm_jax.training.trainer`): it freezes through the optimizer (gradients
and Adam moments exist only for the trained group), and a non-finite step
stops the run with `NonFiniteLoss`. The schedules ("staged", "original") are
described at `AdapterTrainConfig`.

Outputs in WORKDIR: adapters/ (params.npz + adapter_config.json, rewritten
after each stage), tb/ (TensorBoard), config.json, summary.json, and kg/
(the embedded sample's graph and evaluation sets) when the config names no
corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from kmlm_jax import fileio, sharding
from kmlm_jax.adapters import data as data_lib
from kmlm_jax.adapters.config import ORIGINAL_PHASES, AdapterExperimentConfig
from kmlm_jax.adapters.losses import info_nce, mean_pool, normalize
from kmlm_jax.config import ModelConfig, OptimizerConfig
from kmlm_jax.errors import InputError, NonFiniteLoss
from kmlm_jax.evaluation import progress as progress_lib
from kmlm_jax.experiment import ConfigError
from kmlm_jax.kg.corpus_dir import CorpusDir
from kmlm_jax.models.adapters import (FUSION, AdaptedEncoder, AdapterConfig, AdapterFusion,
                                      KnowledgeAdapters)
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.sharding import Partitioner
from kmlm_jax.training.metrics_writer import MetricsWriter, TensorBoardWriter
from kmlm_jax.training.optimizer import COSINE_RESTARTS, RestartsConfig
from kmlm_jax.training.trainer import Task, Trainer, make_trainer

log = logging.getLogger("kmlm_jax.adapters")


# ---------------------------------------------------------------- resolving inputs


@dataclasses.dataclass
class Setup:
  """A config resolved against the disk: the base model, tokenizer and corpus."""

  config: AdapterExperimentConfig
  model_config: ModelConfig  # the base's (from init_from when given), no MLM head
  base_params: dict | None  # nested pure dict of the encoder, None: random init
  base: str  # what the base is, in words
  vocab: Any
  vocab_path: str
  corpus: data_lib.AdapterCorpus


def resolve(config: AdapterExperimentConfig, workdir: Path | str, *,
            load_base: bool = True) -> Setup:
  """The base model, tokenizer and corpus of a run. Everything cheap is checked before the
  base's parameters are loaded (`load_base_params`; with `load_base=False`, left to the
  caller): the checkpoint's model config, the tokenizer against the model's embeddings,
  data.seq_length against its positions, the corpus files."""
  from kmlm_jax import model_checkpoint as mc
  workdir = Path(workdir)
  model_config, base = config.model, f"random init (seed {config.train.seed})"
  tokenizer_dir = None
  if config.init_from:
    try:
      ckpt_config, _ = mc.read_model_config(config.init_from)
    except InputError as e:
      raise ConfigError(f"init_from: {e}") from None
    # The checkpoint is the architecture; how to compute it is the run's.
    model_config = ckpt_config.with_run_settings(config.model)
    base = f"checkpoint {config.init_from}"
    tokenizer_dir = mc.tokenizer_dir_of(config.init_from)
  model_config = model_config.replace(use_mlm_head=False)
  vocab_path, vocab = _load_vocab(config, tokenizer_dir)
  where = (f"the init_from checkpoint {config.init_from}" if config.init_from
           else "the config's model")
  if vocab.vocab_size > model_config.vocab_size:
    raise ConfigError(f"the tokenizer {vocab_path} has {vocab.vocab_size} ids but {where} "
                      f"only {model_config.vocab_size} token embeddings")
  if config.data.seq_length > model_config.max_length:
    raise ConfigError(f"data.seq_length: {config.data.seq_length} tokens do not fit the "
                      f"{model_config.max_length} positions of {where}")
  corpus_dir = Path(config.data.corpus_dir) if config.data.corpus_dir else workdir / "kg"
  if not config.data.corpus_dir and not CorpusDir(corpus_dir).graph_path.exists():
    build_sample_corpus(corpus_dir, streams=False)
  setup = Setup(config, model_config, None, base, vocab, vocab_path,
                data_lib.AdapterCorpus.load(corpus_dir))
  return load_base_params(setup) if load_base else setup


def load_base_params(setup: Setup) -> Setup:
  """`setup` with the init_from checkpoint's encoder parameters (none: a random base)."""
  from kmlm_jax import model_checkpoint as mc
  if setup.config.init_from:
    progress_lib.phase(f"loading the base checkpoint {setup.config.init_from}")
    _, params, _ = mc.load_model_checkpoint(setup.config.init_from)
    setup.base_params = {k: v for k, v in params.items() if k != "mlm_head"}
  return setup


def _load_vocab(config: AdapterExperimentConfig, tokenizer_dir: Path | None):
  """(path, vocabulary): data.vocab, else the init_from checkpoint's tokenizer (an XLM-R
  tokenizer.json through our sentencepiece vocabulary; anything else, e.g. WordPiece,
  through transformers, from the directory with its special tokens), else the real XLM-R."""
  from kmlm_jax.text.vocab import default_vocab_path, load_vocab
  key = "init_from" if tokenizer_dir is not None and not config.data.vocab else "data.vocab"
  try:
    if config.data.vocab:
      path = config.data.vocab
    elif tokenizer_dir is not None:
      json_file = tokenizer_dir / "tokenizer.json"
      unigram = json_file.exists() and json.loads(json_file.read_text(encoding="utf-8")).get(
          "model", {}).get("type") == "Unigram"
      path = str(json_file if unigram else tokenizer_dir)
    else:
      path = default_vocab_path()
    return path, load_vocab(path)
  except (InputError, ValueError, AttributeError) as e:  # a JSONDecodeError is a ValueError
    raise ConfigError(f"{key}: the tokenizer cannot be read ({type(e).__name__}: {e})") from None


def build_sample_corpus(out: Path, streams: bool = True) -> None:
  """`kmlm-jax kg build --sample --out OUT`; with `streams=False` only what the
  adapters read (graph.npz and eval/), without the pretraining corpora."""
  from kmlm_jax.kg import build
  from kmlm_jax.kg.sample import build_sample_corpora, read_sample
  log.info("building the embedded sample KG corpora into %s", out)
  if streams:
    build_sample_corpora(out, overwrite=True)
    return
  graph, _, _ = read_sample()
  with fileio.atomic_directory(out, overwrite=True) as tmp:
    graph.save(tmp / "graph.npz")
    build.write_evalsets(build.make_plan(graph, build.BuildOptions()), tmp)


def make_sources(setup: Setup) -> dict[str, data_lib.PairBatches]:
  c = setup.config
  sources = data_lib.build_sources(setup.corpus, c.adapters.names, sentences=c.data.sentences,
                                   trex=c.data.trex, hold_out=c.data.hold_out_alignment,
                                   trex_skip_bad=c.data.trex_skip_bad)
  encoder = data_lib.TextEncoder(setup.vocab, c.data.seq_length, c.data.pooling)
  return {name: data_lib.PairBatches(src, i, c.train.batch_size, c.train.seed, encoder)
          for i, (name, src) in enumerate(sources.items())}


# ---------------------------------------------------------------- parameters


def init_params(model_config: ModelConfig, adapters: AdapterConfig, seed: int,
                base_params: dict | None = None) -> dict:
  """Pure-dict parameters: the given base (or a random one from `seed`), fresh
  adapters and fusion (from `seed + 1`)."""
  pure = lambda module: nnx.to_pure_dict(nnx.state(module, nnx.Param))
  if base_params is None:
    base_params = pure(Encoder(model_config, rngs=nnx.Rngs(seed)))
  rngs = nnx.Rngs(seed + 1)
  out = {"encoder": base_params, "adapters": pure(KnowledgeAdapters(model_config, adapters,
                                                                    rngs=rngs))}
  if adapters.fusion:
    out["fusion"] = pure(AdapterFusion(model_config, adapters, rngs=rngs))
  return out


def check_structure(params: dict, abstract: dict) -> None:
  """Fails with the names when `params` does not match the model's parameters."""
  shapes = lambda tree: {"/".join(map(str, p)): np.shape(v)
                         for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  got, want = shapes(params), shapes(abstract)
  if got != want:
    missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    wrong = sorted(k for k in got.keys() & want.keys() if got[k] != want[k])
    raise ConfigError(f"parameters do not fit the model: missing {missing[:5]}, unexpected "
                      f"{extra[:5]}, wrong shapes {wrong[:5]}")


def fingerprint(tree: dict) -> str:
  """sha256 over every array's bytes, in tree order (the frozen-base check)."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
  return h.hexdigest()


# ---------------------------------------------------------------- the tasks


@dataclasses.dataclass
class AdapterTask(Task):
  """InfoNCE of pairs through the adapted encoder, training one group: "adapters" (the
  adapter named by the batch's "adapter" index [B], a traced value, so every adapter
  stage shares one compiled step) or "fusion" (the fusion layer over all adapters)."""

  setup: Setup
  group: str  # "adapters" or "fusion"
  accumulates = False  # in-batch negatives couple the rows of a batch

  def __post_init__(self):
    s = self.setup
    model = nnx.eval_shape(lambda: AdaptedEncoder(s.model_config, s.config.adapters,
                                                  rngs=nnx.Rngs(0)))
    self.graphdef, self.abstract = nnx.split(model, nnx.Param)

  def abstract_params(self):
    return self.abstract

  def trainable(self, path) -> bool:
    return path[0] == self.group

  def loss_fn(self, params, batch, rng, context):
    """(loss, {"accuracy"}) of a batch of pairs; both sides go through one encoder call."""
    c = self.setup.config.train
    active = FUSION if self.group == FUSION else batch["adapter"][0]
    if rng is not None and self.group != FUSION:
      rng = jax.random.fold_in(rng, active)  # each adapter stage draws its own dropout
    model = nnx.merge(self.graphdef, params)
    cat = lambda k: jnp.concatenate([batch[f"left_{k}"], batch[f"right_{k}"]])
    hidden = model(cat("ids"), attention_mask=cat("mask"), active=active,
                   dropout_rng=rng).hidden
    emb = mean_pool(hidden, cat("pool"))
    b = batch["keys"].shape[0]
    loss, accuracy = info_nce(emb[:b], emb[b:], batch["keys"], c.temperature, c.symmetric)
    if self.group == FUSION and c.fusion_value_l2 > 0:
      v = params["fusion"]["value_kernel"]
      loss = loss + c.fusion_value_l2 * jnp.sum(jnp.square(v - jnp.eye(v.shape[-1])))
    return loss, {"accuracy": accuracy}

  def constrain_update(self, new, old, batch):
    """Only the batch's adapter's slice of the [L, A, ...] stack moves."""
    if self.group == FUSION:
      return new
    own = jnp.arange(len(self.setup.config.adapters.names)) == batch["adapter"][0]
    return jax.tree.map(
        lambda n, o: jnp.where(own.reshape((1, -1) + (1,) * (n.ndim - 2)), n, o), new, old)


def stage_batch(pairs: dict, index: int) -> dict:
  """A batch of pairs (every host draws the whole batch) and the active adapter's index as
  an int32 [rows] array."""
  return {**pairs, "adapter": np.full(len(pairs["keys"]), index, np.int32)}


@dataclasses.dataclass
class AdapterTrainer:
  """The adapted encoder of a run on a mesh: parameter placement, one `Trainer` per
  trained group and the (jitted, sharded) encoders."""

  setup: Setup
  partitioner: Partitioner
  _trainers: dict = dataclasses.field(default_factory=dict)
  _encoders: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.tasks = {g: AdapterTask(self.setup, g) for g in ("adapters", FUSION)
                  if g != FUSION or self.setup.config.adapters.fusion}
    task = self.tasks["adapters"]
    self.param_shardings = self.partitioner.shardings(task.abstract)
    self.abstract_params = nnx.to_pure_dict(task.abstract)

  @property
  def mesh(self) -> Mesh:
    return self.partitioner.mesh

  def place(self, params: dict) -> dict:
    return jax.device_put(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params),
                          self.param_shardings)

  def trainer(self, group: str, optimizer: OptimizerConfig | None = None) -> Trainer:
    """The jitted step training `group` ("adapters": every adapter stage; "fusion") with
    `optimizer` (None: the staged schedule's AdamW of the group)."""
    c = self.setup.config.train
    if optimizer is None:
      steps = c.fusion_steps if group == FUSION else c.adapter_steps
      optimizer = OptimizerConfig(c.learning_rate, steps, c.warmup_steps, c.weight_decay,
                                  grad_clip_norm=c.grad_clip_norm)
    if (group, optimizer) not in self._trainers:
      self._trainers[(group, optimizer)] = make_trainer(self.tasks[group], self.partitioner,
                                                        optimizer, seed=c.seed)
    return self._trainers[(group, optimizer)]

  def has_encoder(self, active) -> bool:
    """Whether `encoder(active)` exists (its first call compiles it)."""
    return active in self._encoders

  def encoder(self, active) -> Callable:
    """`encode(params, ids, mask, pool) -> [N, D]` unit-norm fp32 embeddings for mode
    `active` (None: the base; an adapter name; "fusion")."""
    if active not in self._encoders:
      def encode(params, ids, mask, pool):
        model = nnx.merge(self.tasks["adapters"].graphdef, params)
        hidden = model(ids, attention_mask=mask, active=active).hidden
        return normalize(mean_pool(hidden, pool))

      p = self.partitioner
      rows = sharding.batch_sharding(p.mesh, p.rules, 2)
      self._encoders[active] = p.jit(encode, in_shardings=(self.param_shardings, rows, rows, rows),
                                     out_shardings=p.replicated)
    return self._encoders[active]


def make_partitioner(config: AdapterExperimentConfig, devices=None) -> Partitioner:
  """The mesh of `config.mesh` over `devices` (None: all), checked to split train.batch_size
  (cheap: callers check it before loading anything)."""
  partitioner = Partitioner.from_config(config.mesh, devices)
  partitioner.check_batch(config.train.batch_size, "train.batch_size")
  if config.train.schedule == "original":  # the fusion rounds run at half the batch
    partitioner.check_batch(config.train.batch_size // 2,
                            "train.batch_size / 2 (the original schedule's fusion batch)")
  return partitioner


def adapter_trainer(setup: Setup, devices=None) -> AdapterTrainer:
  """The run's trainer on the mesh of `config.mesh` over `devices` (None: all)."""
  return AdapterTrainer(setup, make_partitioner(setup.config, devices))


# ---------------------------------------------------------------- saving


def save_adapters(path: Path | str, params: dict, setup: Setup, stages_done: list[str],
                  base_fingerprint: str) -> None:
  """WORKDIR/adapters: params.npz ({"adapters.down_kernel": ...}) + adapter_config.json."""
  flat = {f"{g}.{k}": np.asarray(jax.device_get(v)) for g in ("adapters", "fusion")
          if g in params for k, v in params[g].items()}
  meta = {"adapters": dataclasses.asdict(setup.config.adapters),
          "model": dataclasses.asdict(setup.model_config), "base": setup.base,
          "init_from": setup.config.init_from, "seed": setup.config.train.seed,
          "base_fingerprint": base_fingerprint, "stages_done": stages_done,
          "vocab": setup.vocab_path}
  with fileio.atomic_directory(path, overwrite=True) as tmp:
    fileio.save_npz(tmp / "params.npz", flat)
    (tmp / "adapter_config.json").write_text(json.dumps(meta, indent=1))


def load_adapters(path: Path | str) -> tuple[dict, dict]:
  """(params {"adapters": {...}, "fusion": {...}}, metadata) of `save_adapters`."""
  path = Path(path)
  if not (path / "params.npz").exists():
    raise ConfigError(f"{path}/params.npz: missing (run `kmlm-jax adapters train` first)")
  out: dict = {}
  try:
    meta = json.loads((path / "adapter_config.json").read_text())
    ModelConfig(**meta["model"])  # checks the recorded base
    with np.load(path / "params.npz", allow_pickle=False) as z:
      for name in z.files:
        group, key = name.split(".", 1)
        out.setdefault(group, {})[key] = z[name]
  except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
    raise ConfigError(f"{path}: damaged adapters directory ({type(e).__name__}: {e})") from None
  return out, meta


# ---------------------------------------------------------------- the run


def original_optimizer(config: AdapterExperimentConfig, steps: int, stride: int = 1,
                       offset: int = 0) -> RestartsConfig:
  """The original schedule's AdamW over a phase of `steps` optimizer steps (of which this
  state makes every `stride`-th, from `offset`): the config's learning rate, warm-up,
  weight decay (on every parameter) and clipping, `train.restarts` cosine hard restarts."""
  c = config.train
  return RestartsConfig(c.learning_rate, steps, c.warmup_steps, c.weight_decay,
                        grad_clip_norm=c.grad_clip_norm, schedule=COSINE_RESTARTS,
                        cycles=c.restarts, stride=stride, offset=offset, decay_all=True)


class _Lane:
  """One optimizer state stepping through part of a run; `params` may come from another
  lane (two adapters alternating on one batch, each with its own moments)."""

  def __init__(self, trainer: Trainer, params: dict, stage: str):
    self.trainer, self.stage = trainer, stage
    self.state = trainer.init_state(params)  # fresh optimizer and schedule

  def step(self, batch: dict, run_log: "_RunLog", params: dict | None = None) -> dict:
    if params is not None:
      self.state = dataclasses.replace(self.state, params=params)
    self.state, metrics = self.trainer.step(self.state,
                                            self.trainer.partitioner.host_rows(batch))
    run_log.count(self.stage, metrics)
    return metrics

  @property
  def params(self) -> dict:
    return self.state.params


class _RunLog:
  """Steps per stage, the history of logged steps (every `log_every` steps of a stage and
  at `flush`), TensorBoard on process 0, and the non-finite check at each log."""

  def __init__(self, config: AdapterExperimentConfig, workdir: Path):
    self.config, self.history, self.steps = config, [], {}
    self.global_step, self._bad, self._last = 0, {}, {}
    self.writer = (TensorBoardWriter(workdir / "tb") if jax.process_index() == 0
                   else MetricsWriter())

  def count(self, stage: str, metrics: dict) -> None:
    n = self.steps[stage] = self.steps.get(stage, 0) + 1
    self.global_step += 1
    bad = self._bad.get(stage, jnp.zeros((), jnp.int32))  # the first step not applied
    self._bad[stage] = jnp.where((bad == 0) & ~metrics["finite"], n, bad)
    self._last[stage] = (metrics, self.global_step)
    if n % self.config.train.log_every == 0:
      self.flush(stage)

  def flush(self, stage: str) -> None:
    """Logs the last step of `stage` (once); raises NonFiniteLoss for a skipped update."""
    if stage not in self._last:
      return
    (metrics, global_step), n = self._last.pop(stage), self.steps[stage]
    m = jax.device_get(metrics)
    bad = int(self._bad[stage])
    if bad:
      raise NonFiniteLoss(f"adapters stage {stage} step {bad}: the loss or gradient "
                          "is not finite; the update was not applied (lower "
                          "train.learning_rate)")
    keys = ("loss", "accuracy", "grad_norm")
    record = {"stage": stage, "step": n, **{k: float(m[k]) for k in keys}}
    self.history.append(record)
    self.writer.write_scalars(global_step, {f"{stage}/{k}": record[k] for k in keys})

  def close(self) -> None:
    self.writer.close()


def _staged(run: AdapterTrainer, batches: dict, params: dict, run_log: _RunLog, save,
            progress: bool) -> tuple[dict, list[str]]:
  """`train.stages` in order, each with a fresh optimizer; returns (params, stages done)."""
  config = run.setup.config
  c, names, done, compiled = config.train, config.adapters.names, [], set()
  for stage in c.stages:
    group, steps, index = ((FUSION, c.fusion_steps, 0) if stage == FUSION
                           else ("adapters", c.adapter_steps, names.index(stage)))
    lane = _Lane(run.trainer(group), params, stage)
    compiling = None if group in compiled else f"the {group} step"
    compiled.add(group)
    t0 = time.perf_counter()
    with progress_lib.bar(steps, f"{config.name}:{stage}", "step", compiling,
                          disable=not progress) as bar:
      for s in range(steps):
        source, local = (names[s % len(names)], s // len(names)) if stage == FUSION else (stage, s)
        metrics = lane.step(stage_batch(batches[source].batch(local), index), run_log)
        if s == 0:  # the compile is over when the first step is: the bar starts honestly
          jax.block_until_ready(metrics["loss"])
        if s + 1 == steps:
          run_log.flush(stage)
        _tick(bar, run_log, stage)
    params = lane.params
    done.append(stage)
    log.info("stage %s: %d steps in %.1fs", stage, steps, time.perf_counter() - t0)
    save(params, done)
  return params, done


def _tick(bar, run_log: _RunLog, stage: str) -> None:
  """Advances `bar`, showing the last logged record when it is of `stage`."""
  last = run_log.history[-1] if run_log.history else None
  if last is not None and last["stage"] == stage:
    bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.2f}")
  bar.update(1)


def fusion_selection(config: AdapterExperimentConfig, round_: int, part: int) -> np.ndarray:
  """The batches (of `fusion_steps`) one part of one fusion round trains on: each kept
  with probability `fusion_fractions[part]`, drawn from (seed, round, part); at least one."""
  c = config.train
  draw = np.random.default_rng([c.seed, round_, part, 0xF05E]).random(c.fusion_steps)
  kept = np.flatnonzero(draw < c.fusion_fractions[part])
  return kept if len(kept) else np.asarray([int(np.argmin(draw))])


def _original(run: AdapterTrainer, batches: dict, params: dict, run_log: _RunLog, save,
              progress: bool) -> tuple[dict, list[str]]:
  """The original code's schedule (see `AdapterTrainConfig`); returns (params, stages done).
  The fusion rounds: each a phrase part and a sentence part with a fresh optimizer; on each
  selected batch (of half the batch size) a fusion step on the first adapter's data, then
  on the second's."""
  config = run.setup.config
  c, done = config.train, []
  for phase, pair in ORIGINAL_PHASES:
    params = _original_phase(run, batches, params, run_log, phase, pair, progress)
    done += list(pair)
    save(params, done)
  half = {n: data_lib.PairBatches(b.source, b.source_id, c.batch_size // 2, c.seed, b.encoder)
          for n, b in batches.items()}
  trainer = run.trainer(FUSION, original_optimizer(config, 2 * c.fusion_steps))
  selected = [[fusion_selection(config, r, part) for part in range(2)]
              for r in range(c.fusion_rounds)]
  t0 = time.perf_counter()
  with progress_lib.bar(sum(len(k) for r in selected for k in r), f"{config.name}:fusion",
                        "batch", "the fusion step", disable=not progress) as bar:
    for r, parts in enumerate(selected):
      for kept, (_, pair) in zip(parts, ORIGINAL_PHASES):
        lane = _Lane(trainer, params, FUSION)
        for s in kept:
          for source in pair:
            lane.step(stage_batch(half[source].batch(r * c.fusion_steps + int(s)), 0), run_log)
          _tick(bar, run_log, FUSION)
        params = lane.params
      save(params, done + [FUSION])
  run_log.flush(FUSION)
  log.info("stage %s: %d steps in %.1fs", FUSION, run_log.steps[FUSION],
           time.perf_counter() - t0)
  return params, done + [FUSION]


def _original_phase(run: AdapterTrainer, batches: dict, params: dict, run_log: _RunLog,
                    phase: str, pair: tuple[str, str], progress: bool) -> dict:
  """`adapter_steps` batches, each a step of pair[0], then of pair[1] (its own moments,
  one schedule counting both steps)."""
  config = run.setup.config
  c, names, t0 = config.train, config.adapters.names, time.perf_counter()
  lanes = [_Lane(run.trainer("adapters", original_optimizer(config, 2 * c.adapter_steps, 2, k)),
                 params, stage) for k, stage in enumerate(pair)]
  with progress_lib.bar(c.adapter_steps, f"{config.name}:{phase}", "batch",
                        "the adapter step" if phase == "phrase" else None,
                        disable=not progress) as bar:
    for s in range(c.adapter_steps):
      for lane in lanes:
        lane.step(stage_batch(batches[lane.stage].batch(s), names.index(lane.stage)), run_log,
                  params)
        params = lane.params
      _tick(bar, run_log, pair[-1])
  for stage in pair:
    run_log.flush(stage)
  log.info("stage %s: %d steps in %.1fs", phase, 2 * c.adapter_steps, time.perf_counter() - t0)
  return params


def train(config: AdapterExperimentConfig, workdir: Path | str, *, progress: bool = True,
          devices=None) -> dict:
  """Runs the config's schedule on `devices` (None: all); returns the summary (also
  WORKDIR/summary.json)."""
  workdir = Path(workdir)
  partitioner = make_partitioner(config, devices)
  setup = resolve(config, workdir)
  run = AdapterTrainer(setup, partitioner)
  if progress:
    progress_lib.phase(f"building the training pairs of {', '.join(config.adapters.names)}")
  batches = make_sources(setup)
  c = config.train
  params = init_params(setup.model_config, config.adapters, c.seed, setup.base_params)
  check_structure(params, run.abstract_params)
  params = run.place(params)
  base_before = fingerprint(params["encoder"])
  workdir.mkdir(parents=True, exist_ok=True)  # every input checked: the first output
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))

  def save(params, done):
    if jax.process_index() == 0:
      save_adapters(workdir / "adapters", params, setup, list(done), base_before)

  run_log, started = _RunLog(config, workdir), time.perf_counter()
  schedule = _original if c.schedule == "original" else _staged
  params, done = schedule(run, batches, params, run_log, save, progress)
  if fingerprint(params["encoder"]) != base_before:
    raise AssertionError("the frozen base parameters changed during adapter training")
  summary = {"name": config.name, "base": setup.base, "schedule": c.schedule, "stages": done,
             "steps": dict(run_log.steps), "history": run_log.history,
             "base_fingerprint": base_before, "base_unchanged": True,
             "seconds": time.perf_counter() - started,
             "pairs": {n: b.source.size for n, b in batches.items()}}
  run_log.close()
  if jax.process_index() == 0:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  return summary
