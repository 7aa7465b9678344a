"""Training the knowledge adapters, then the fusion, on a frozen encoder.

Parameters are one pure-dict tree `{"encoder", "adapters", "fusion"}` (the
`nnx.Param` state of `AdaptedEncoder`), placed on the mesh by their logical
axes. Each stage freezes through the optimizer: `optax.multi_transform`
gives the trained group AdamW (warm-up + linear decay, clipping) and every
other group `set_to_zero`, and the step writes back the frozen groups
unchanged (gradients are taken only for the trained group). An adapter
stage trains one slice of the [L, A, ...] adapter stack -- the adapter's
index is a traced argument, so all adapter stages share one compiled step
-- and keeps the other slices as they were. The fusion stage trains the
fusion layer on the data of all adapters, one source per step in turn.

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
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kmlm_jax import fileio, sharding
from kmlm_jax.adapters import data as data_lib
from kmlm_jax.adapters.config import AdapterExperimentConfig, AdapterTrainConfig
from kmlm_jax.adapters.losses import info_nce, mean_pool, normalize
from kmlm_jax.config import ModelConfig, TrainConfig
from kmlm_jax.experiment import ConfigError
from kmlm_jax.kg.corpus_dir import CorpusDir
from kmlm_jax.models.adapters import (FUSION, AdaptedEncoder, AdapterConfig, AdapterFusion,
                                      KnowledgeAdapters)
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.training.optimizer import learning_rate_schedule
from kmlm_jax.training.train_state import TrainState

log = logging.getLogger("kmlm_jax.adapters")
GROUPS = ("encoder", "adapters", "fusion")


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


def resolve(config: AdapterExperimentConfig, workdir: Path | str) -> Setup:
  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.text.vocab import default_vocab_path, load_vocab
  workdir = Path(workdir)
  model_config, base_params, base = config.model, None, f"random init (seed {config.train.seed})"
  tokenizer_dir = None
  if config.init_from:
    ckpt_config, flat, _ = mc.load_model_checkpoint(config.init_from)
    model_config = ckpt_config.replace(
        dtype=config.model.dtype, remat=config.model.remat,
        dropout_rate=config.model.dropout_rate,
        attention_dropout_rate=config.model.attention_dropout_rate)
    flat = {k: v for k, v in flat.items() if not k.startswith("mlm_head.")}
    base_params = mc.nest_tree(flat)
    base = f"checkpoint {config.init_from}"
    tokenizer_dir = mc.tokenizer_dir_of(config.init_from)
  model_config = model_config.replace(use_mlm_head=False)
  if config.data.vocab:
    vocab_path = config.data.vocab
  elif tokenizer_dir is not None:
    # An XLM-R tokenizer.json runs through our sentencepiece vocabulary; anything
    # else (WordPiece) through transformers, from the directory with its special tokens.
    json_file = tokenizer_dir / "tokenizer.json"
    unigram = json_file.exists() and json.loads(json_file.read_text(encoding="utf-8")).get(
        "model", {}).get("type") == "Unigram"
    vocab_path = str(json_file if unigram else tokenizer_dir)
  else:
    vocab_path = default_vocab_path()
  vocab = load_vocab(vocab_path)
  if vocab.vocab_size > model_config.vocab_size:
    raise ConfigError(f"the tokenizer {vocab_path} has {vocab.vocab_size} ids but the model "
                      f"only {model_config.vocab_size} embeddings")
  corpus_dir = Path(config.data.corpus_dir) if config.data.corpus_dir else workdir / "kg"
  if not config.data.corpus_dir and not CorpusDir(corpus_dir).graph_path.exists():
    build_sample_corpus(corpus_dir, streams=False)
  return Setup(config, model_config, base_params, base, vocab, vocab_path,
               data_lib.AdapterCorpus.load(corpus_dir))


def build_sample_corpus(out: Path, streams: bool = True) -> None:
  """`kmlm-jax kg build --sample --out OUT`; with `streams=False` only what the
  adapters read (graph.npz and eval/), without the pretraining corpora."""
  from kmlm_jax.kg import build
  from kmlm_jax.kg.sample import read_sample
  log.info("building the embedded sample KG corpora into %s", out)
  graph, stats, info = read_sample()
  options = build.BuildOptions()
  if streams:
    build.build(graph, out, options, read_stats=stats, read_info=info,
                source={"sample": "kmlm_jax/kg/data/sample_wikidata.json"}, overwrite=True)
    return
  with fileio.atomic_directory(out, overwrite=True) as tmp:
    graph.save(tmp / "graph.npz")
    build.write_evalsets(build.make_plan(graph, options), tmp)


def make_sources(setup: Setup) -> dict[str, data_lib.PairBatches]:
  c = setup.config
  sources = data_lib.build_sources(setup.corpus, c.adapters.names, sentences=c.data.sentences,
                                   trex=c.data.trex, hold_out=c.data.hold_out_alignment,
                                   trex_skip_bad=c.data.trex_skip_bad)
  encoder = data_lib.TextEncoder(setup.vocab, c.data.seq_length, c.data.pooling)
  return {name: data_lib.PairBatches(src, i, c.train.batch_size, c.train.seed, encoder)
          for i, (name, src) in enumerate(sources.items())}


# ---------------------------------------------------------------- parameters


def abstract_model(model_config: ModelConfig, adapters: AdapterConfig) -> AdaptedEncoder:
  return nnx.eval_shape(lambda: AdaptedEncoder(model_config, adapters, rngs=nnx.Rngs(0)))


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
  got = {"/".join(map(str, p)): np.shape(v) for p, v in jax.tree_util.tree_flatten_with_path(
      params)[0]}
  want = {"/".join(map(str, p)): tuple(v.shape) for p, v in
          jax.tree_util.tree_flatten_with_path(abstract)[0]}
  if got != want:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    shapes = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    raise ConfigError(f"parameters do not fit the model: missing {missing[:5]}, unexpected "
                      f"{extra[:5]}, wrong shapes {shapes[:5]}")


def fingerprint(tree: dict) -> str:
  """sha256 over every array's bytes, in tree order (the frozen-base check)."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
  return h.hexdigest()


# ---------------------------------------------------------------- the steps


def stage_optimizer(train: AdapterTrainConfig, steps: int, trained: str,
                    params: dict) -> optax.GradientTransformation:
  """AdamW on group `trained` ("adapters" / "fusion") of `params` (a tree of arrays or
  shapes), `set_to_zero` elsewhere."""
  schedule = learning_rate_schedule(TrainConfig(steps=steps, learning_rate=train.learning_rate,
                                                warmup_steps=train.warmup_steps))
  chain = []
  if train.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(train.grad_clip_norm))
  chain.append(optax.adamw(schedule, weight_decay=train.weight_decay,
                           mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
  labels = {g: jax.tree.map(lambda _: "train" if g == trained else "frozen", sub)
            for g, sub in params.items()}
  return optax.multi_transform({"train": optax.chain(*chain), "frozen": optax.set_to_zero()},
                               labels)


@dataclasses.dataclass
class AdapterTrainer:
  """Jitted, sharded steps and encoders of one run."""

  setup: Setup
  mesh: Mesh
  graphdef: Any
  param_shardings: dict
  batch_shardings: dict
  replicated: NamedSharding
  abstract_params: dict  # ShapeDtypeStructs of the parameter tree
  _steps: dict = dataclasses.field(default_factory=dict)
  _encoders: dict = dataclasses.field(default_factory=dict)

  @property
  def config(self) -> AdapterExperimentConfig:
    return self.setup.config

  def place(self, params: dict) -> dict:
    return jax.device_put(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params),
                          self.param_shardings)

  def forward_loss(self, params, batch, active, rng):
    """(loss, accuracy) of a batch of pairs; both sides go through one encoder call."""
    c = self.config
    model = nnx.merge(self.graphdef, params)
    cat = lambda k: jnp.concatenate([batch[f"left_{k}"], batch[f"right_{k}"]])
    hidden = model(cat("ids"), attention_mask=cat("mask"), active=active,
                   dropout_rng=rng).hidden
    emb = mean_pool(hidden, cat("pool"))
    b = batch["keys"].shape[0]
    loss, accuracy = info_nce(emb[:b], emb[b:], batch["keys"], c.train.temperature,
                              c.train.symmetric)
    if isinstance(active, str) and active == FUSION and c.train.fusion_value_l2 > 0:
      v = params["fusion"]["value_kernel"]
      loss = loss + c.train.fusion_value_l2 * jnp.sum(jnp.square(v - jnp.eye(v.shape[-1])))
    return loss, accuracy

  def _state_shardings(self, tx) -> TrainState:
    """Adam moments are sharded like the parameters they follow (matched by the
    parameter path at the end of their own path); the rest is replicated."""
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float32),
                            self.abstract_params)
    keys = lambda path: tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
    by_path = {keys(p): (tuple(a.shape), s) for (p, a), s in zip(
        jax.tree_util.tree_flatten_with_path(abstract)[0], jax.tree.leaves(self.param_shardings))}

    def one(path, leaf):
      k = keys(path)
      for i in range(len(k)):
        shape, spec = by_path.get(k[i:], (None, None))
        if shape == tuple(leaf.shape):
          return spec
      return self.replicated

    opt = jax.tree_util.tree_map_with_path(one, jax.eval_shape(tx.init, abstract))
    return TrainState(self.param_shardings, opt, self.replicated, self.replicated)

  def stage(self, kind: str, steps: int) -> tuple[Callable, Callable]:
    """For kind "adapter" or "fusion": (init(params, key) -> TrainState,
    step(state, batch, index) -> (state, metrics)); `index` is the adapter's."""
    cache_key = (kind, steps)
    if cache_key in self._steps:
      return self._steps[cache_key]
    trained = "fusion" if kind == FUSION else "adapters"
    tx = stage_optimizer(self.config.train, steps, trained, self.abstract_params)
    shardings = self._state_shardings(tx)
    num_adapters = len(self.config.adapters.names)

    def init(params, key):
      return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), key)

    def step(state: TrainState, batch, index):
      active = FUSION if kind == FUSION else index
      rng = jax.random.fold_in(state.rng, state.step)
      frozen = {g: v for g, v in state.params.items() if g != trained}
      loss_fn = lambda train_part: self.forward_loss({**frozen, trained: train_part}, batch,
                                                     active, rng)
      (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params[trained])
      full = {g: grads if g == trained else jax.tree.map(jnp.zeros_like, v)
              for g, v in state.params.items()}
      updates, opt_state = tx.update(full, state.opt_state, state.params)
      new = optax.apply_updates(state.params, updates)[trained]
      if kind != FUSION:
        # Only this adapter's slice of the [L, A, ...] stack moves.
        own = jnp.arange(num_adapters) == index
        new = jax.tree.map(lambda n, o: jnp.where(own.reshape((1, -1) + (1,) * (n.ndim - 2)),
                                                  n, o), new, state.params[trained])
      finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
      keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(finite, x, y), a, b)
      params = {**state.params, trained: keep(new, state.params[trained])}
      new_state = TrainState(params, keep(opt_state, state.opt_state), state.step + 1, state.rng)
      return new_state, {"loss": loss, "accuracy": accuracy, "finite": finite,
                         "grad_norm": optax.tree.norm(grads)}

    rules = self.config.mesh.rules
    init_fn = jax.jit(init, in_shardings=(self.param_shardings, self.replicated),
                      out_shardings=shardings, donate_argnums=0)
    step_fn = jax.jit(step, in_shardings=(shardings, self.batch_shardings, self.replicated),
                      out_shardings=(shardings, self.replicated), donate_argnums=0)
    wrapped = (init_fn, _with_activation_sharding(step_fn, self.mesh, rules))
    self._steps[cache_key] = wrapped
    return wrapped

  def encoder(self, active) -> Callable:
    """`encode(params, ids, mask, pool) -> [N, D]` unit-norm fp32 embeddings for mode
    `active` (None: the base; an adapter name; "fusion")."""
    if active not in self._encoders:
      def encode(params, ids, mask, pool):
        model = nnx.merge(self.graphdef, params)
        hidden = model(ids, attention_mask=mask, active=active).hidden
        return normalize(mean_pool(hidden, pool))

      b = sharding.batch_sharding(self.mesh, self.config.mesh.rules, 2)
      fn = jax.jit(encode, in_shardings=(self.param_shardings, b, b, b),
                   out_shardings=self.replicated)
      self._encoders[active] = _with_activation_sharding(fn, self.mesh, self.config.mesh.rules)
    return self._encoders[active]


def _with_activation_sharding(fn, mesh, rules):
  def call(*args):
    with sharding.activation_sharding(mesh, rules):
      return fn(*args)
  return call


def make_trainer(setup: Setup, mesh: Mesh | None = None) -> AdapterTrainer:
  c = setup.config
  mesh = mesh or sharding.make_mesh(c.mesh)
  ways = batch_ways(mesh, c.mesh.rules)
  if (2 * c.train.batch_size) % ways or c.train.batch_size % ways:
    raise ConfigError(f"train.batch_size={c.train.batch_size} cannot be split over the "
                      f"{ways} devices of the batch axes; use a multiple of {ways}")
  graphdef, abstract = nnx.split(abstract_model(setup.model_config, c.adapters), nnx.Param)
  param_shardings = nnx.to_pure_dict(sharding.state_shardings(abstract, mesh, c.mesh.rules))
  row = sharding.batch_sharding(mesh, c.mesh.rules, 2)
  batch_shardings = {k: row for k in data_lib.BATCH_KEYS if k != "keys"}
  batch_shardings["keys"] = sharding.batch_sharding(mesh, c.mesh.rules, 1)
  return AdapterTrainer(setup, mesh, graphdef, param_shardings, batch_shardings,
                        NamedSharding(mesh, PartitionSpec()), nnx.to_pure_dict(abstract))


def batch_ways(mesh: Mesh, rules) -> int:
  axes = dict(rules).get("batch") or ()
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return int(np.prod([mesh.shape[a] for a in axes]))


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
  meta = json.loads((path / "adapter_config.json").read_text())
  out: dict = {}
  with np.load(path / "params.npz", allow_pickle=False) as z:
    for name in z.files:
      group, key = name.split(".", 1)
      out.setdefault(group, {})[key] = z[name]
  return out, meta


# ---------------------------------------------------------------- the run


def train(config: AdapterExperimentConfig, workdir: Path | str, *, progress: bool = True,
          mesh: Mesh | None = None) -> dict:
  """Runs `config.train.stages` in order; returns the summary (also WORKDIR/summary.json)."""
  from tqdm.auto import tqdm
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  setup = resolve(config, workdir)
  trainer = make_trainer(setup, mesh)
  batches = make_sources(setup)
  c = config.train
  params = init_params(setup.model_config, config.adapters, c.seed, setup.base_params)
  check_structure(params, trainer.abstract_params)
  params = trainer.place(params)
  base_before = fingerprint(params["encoder"])
  writer = None
  if jax.process_index() == 0:
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(str(workdir / "tb"))
    (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
  names = config.adapters.names
  history, done, started = [], [], time.perf_counter()
  global_step = 0
  for stage_index, stage in enumerate(c.stages):
    steps = c.fusion_steps if stage == FUSION else c.adapter_steps
    init_fn, step_fn = trainer.stage(FUSION if stage == FUSION else "adapter", steps)
    state = init_fn(params, jax.random.PRNGKey(c.seed + 100 + stage_index))
    index = np.int32(names.index(stage) if stage != FUSION else 0)
    bar = tqdm(total=steps, desc=f"{config.name}:{stage}", unit="step", disable=not progress)
    t0 = time.perf_counter()
    skipped = jnp.zeros((), jnp.int32)  # steps whose update was not applied (non-finite)
    for s in range(steps):
      source = stage if stage != FUSION else names[s % len(names)]
      local = s if stage != FUSION else s // len(names)
      host = batches[source].batch(local)
      batch = {k: jax.device_put(v, trainer.batch_shardings[k]) for k, v in host.items()}
      state, metrics = step_fn(state, batch, index)
      skipped = skipped + (~metrics["finite"]).astype(jnp.int32)
      if (s + 1) % c.log_every == 0 or s + 1 == steps:
        m = jax.device_get(metrics)
        if int(skipped):
          from kmlm_jax.training.loop import NonFiniteLoss
          raise NonFiniteLoss(f"stage {stage} step {s + 1}: the loss or gradient is not finite; "
                              "the update was not applied (lower train.learning_rate)")
        record = {"stage": stage, "step": s + 1, "loss": float(m["loss"]),
                  "accuracy": float(m["accuracy"]), "grad_norm": float(m["grad_norm"])}
        history.append(record)
        if writer is not None:
          for k in ("loss", "accuracy", "grad_norm"):
            writer.add_scalar(f"{stage}/{k}", record[k], global_step + s + 1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.2f}")
      bar.update(1)
    bar.close()
    global_step += steps
    params = state.params
    done.append(stage)
    log.info("stage %s: %d steps in %.1fs", stage, steps, time.perf_counter() - t0)
    if jax.process_index() == 0:
      save_adapters(workdir / "adapters", params, setup, done, base_before)
  base_after = fingerprint(params["encoder"])
  if base_after != base_before:
    raise AssertionError("the frozen base parameters changed during adapter training")
  summary = {"name": config.name, "base": setup.base, "stages": done, "history": history,
             "base_fingerprint": base_before, "base_unchanged": base_after == base_before,
             "seconds": time.perf_counter() - started,
             "pairs": {n: b.source.size for n, b in batches.items()}}
  if writer is not None:
    writer.close()
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  return summary
