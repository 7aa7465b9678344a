"""The configs: frozen dataclasses, so they can be hashed, compared and passed as static
arguments to `jax.jit`.

Each field's allowed values are declared once, next to it (`allowed_field(default, low=...)`,
an `Allowed` in the field's metadata); `check_fields` checks any config against its
types and these declarations, naming the key and the allowed values. A `ModelConfig`
checks itself when built; `ExperimentConfig.validate()` (called when a config file is
loaded) checks the whole config and the relations between its sections.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from typing import Literal

from kmlm_jax.errors import InputError

Flavour = Literal["xlmr", "bert"]
REMAT_POLICIES = ("none", "minimal", "full", "save_out_proj")
# Shortest row the input pipeline packs (`<s>`, a few tokens, `</s>`, room to pack).
MIN_SEQ_LENGTH = 16


@dataclasses.dataclass(frozen=True)
class Allowed:
  """The values of a field beyond its type: an interval (finite numbers only) or choices."""

  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  choices: tuple = ()

  def admits(self, value) -> bool:
    if self.choices:
      return value in self.choices
    if not math.isfinite(value):
      return False
    if self.low is not None and (value <= self.low if self.low_open else value < self.low):
      return False
    return self.high is None or (value < self.high if self.high_open else value <= self.high)

  def __str__(self) -> str:
    if self.choices:
      return "one of " + ", ".join(repr(c) for c in self.choices)
    if self.high is None:
      return f"{'>' if self.low_open else '>='} {self.low:g}"
    return (f"in {'(' if self.low_open else '['}{self.low:g}, "
            f"{self.high:g}{')' if self.high_open else ']'}")


def allowed_field(default=dataclasses.MISSING, **allowed):
  """A dataclass field whose allowed values are `Allowed(**allowed)`."""
  return dataclasses.field(default=default, metadata={"allowed": Allowed(**allowed)})


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def has_type(value, hint) -> bool:
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    return any(has_type(value, a) for a in args)
  if origin is Literal:
    return value in args
  if hint is type(None):
    return value is None
  if hint in (int, float):  # Python's bool is an int: only bool fields take it
    base = numbers.Integral if hint is int else numbers.Real
    return isinstance(value, base) and not isinstance(value, bool)
  kind = origin or hint
  return isinstance(value, kind) if isinstance(kind, type) else True


def _expected(hint, allowed: Allowed | None) -> str:
  """The allowed values of a field in words: 'an integer >= 1', 'a string or none', ..."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    return " or ".join(_expected(a, allowed) if a is not type(None) else "none" for a in args)
  if origin is Literal:
    return "one of " + ", ".join(repr(a) for a in args)
  if allowed and allowed.choices:
    return str(allowed)
  kind = _KINDS.get(hint, "comma-separated values" if origin is tuple else str(hint))
  return f"{kind} {allowed}" if allowed and hint is not bool else kind


@functools.cache
def type_hints(cls) -> dict:
  return typing.get_type_hints(cls)


def expected_value(config, name: str) -> str:
  """The allowed values of field `name` of a config dataclass, in words."""
  field = next(f for f in dataclasses.fields(config) if f.name == name)
  return _expected(type_hints(type(config))[name], field.metadata.get("allowed"))


def check_fields(config, prefix: str = "") -> None:
  """Raises an `InputError` naming the key (`prefix.field`) and its allowed values for the
  first field of `config` (and of its nested configs) of the wrong type or out of range."""
  for field in dataclasses.fields(config):
    key = f"{prefix}.{field.name}" if prefix else field.name
    value, allowed = getattr(config, field.name), field.metadata.get("allowed")
    if dataclasses.is_dataclass(value):
      check_fields(value, key)
    elif not has_type(value, type_hints(type(config))[field.name]) or (
        allowed is not None and value is not None and not allowed.admits(value)):
      raise InputError(f"{key}: {value!r} is not allowed; expected "
                       f"{expected_value(config, field.name)}")


def _divisors(n: int) -> str:
  found = [d for d in range(1, n + 1) if n % d == 0]
  return ", ".join(map(str, found[:12])) + (", ..." if len(found) > 12 else "")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Dimensions and behaviour of one encoder.

  `flavour` selects the two differences between the checkpoints we port:
  XLM-R (RoBERTa) positions start at `pad_token_id + 1` and it has one token
  type; BERT/mBERT positions start at 0 and it has two token types.
  """

  flavour: Flavour
  vocab_size: int = allowed_field(low=1)
  hidden_size: int = allowed_field(low=1)
  num_layers: int = allowed_field(low=1)
  num_heads: int = allowed_field(low=1)
  intermediate_size: int = allowed_field(low=1)
  max_position_embeddings: int = allowed_field(low=1)
  type_vocab_size: int = allowed_field(low=1)
  pad_token_id: int = allowed_field(low=0)
  layer_norm_eps: float = allowed_field(low=0, low_open=True)
  hidden_act: str = "gelu"
  dropout_rate: float = allowed_field(0.1, low=0, high=1, high_open=True)
  attention_dropout_rate: float = allowed_field(0.1, low=0, high=1, high_open=True)
  initializer_range: float = allowed_field(0.02, low=0)
  use_pooler: bool = False
  use_mlm_head: bool = True
  # Compute dtype of matmuls and activations; parameters always stay fp32.
  dtype: str = allowed_field("float32", choices=("float32", "bfloat16"))
  # What each layer keeps for the backward pass (MaxText's `remat_policy` names): "none"
  # keeps every activation; "full" recomputes the layer; "minimal" keeps the matmul
  # outputs without a batch dimension (`checkpoint_dots_with_no_batch_dims`);
  # "save_out_proj" keeps only the attention output projection.
  remat_policy: str = allowed_field("none", choices=REMAT_POLICIES)
  # Run the layers as one `lax.scan` (compile time independent of depth);
  # False unrolls them: a faster step for shallow models, slower compiles.
  scan_layers: bool = True
  # Attention of the causal (Prix-LM) rows: "prefix_causal" lets the prefix tokens see
  # each other (kmlm-jax's Prix-LM); "causal" is fully causal, as the released Prix-LM
  # (`XLMRobertaForCausalLM`). Rows without a prefix (MLM) stay bidirectional.
  attention: str = allowed_field("prefix_causal", choices=("prefix_causal", "causal"))

  def __post_init__(self):
    check_fields(self, "model")
    if self.hidden_size % self.num_heads:
      raise InputError(f"model.num_heads: {self.num_heads} does not divide model.hidden_size="
                       f"{self.hidden_size}; expected one of {_divisors(self.hidden_size)}")
    if self.pad_token_id >= self.vocab_size:
      raise InputError(f"model.pad_token_id: {self.pad_token_id} is not allowed; expected "
                       f"an id below model.vocab_size={self.vocab_size}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def position_offset(self) -> int:
    """Position id of the first real token (RoBERTa counts from pad + 1)."""
    return self.pad_token_id + 1 if self.flavour == "xlmr" else 0

  @property
  def max_length(self) -> int:
    """The longest input the model takes: its positions less the offset (XLM-R: pad + 1)."""
    return self.max_position_embeddings - self.position_offset

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def architecture(self) -> dict:
    """The fields a checkpoint is (its parameters' names and shapes, its function)."""
    return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_SETTINGS}

  def with_run_settings(self, run: "ModelConfig") -> "ModelConfig":
    """This architecture computed as `run` asks (dtype, remat_policy, scan_layers, dropout)."""
    return self.replace(**{k: getattr(run, k) for k in RUN_SETTINGS})

  def num_params(self) -> int:
    """Parameter count of the encoder plus MLM head (word embeddings tied)."""
    d, f, n = self.hidden_size, self.intermediate_size, self.num_layers
    emb = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * d + 2 * d
    layer = 4 * (d * d + d) + 2 * d * f + f + d + 4 * d
    total = emb + n * layer
    if self.use_pooler:
      total += d * d + d
    if self.use_mlm_head:
      total += d * d + d + 2 * d + self.vocab_size
    return total


# How a run computes, not what a checkpoint is: any checkpoint accepts any of these.
RUN_SETTINGS = ("dropout_rate", "attention_dropout_rate", "dtype", "remat_policy",
                "scan_layers")

_XLMR = dict(flavour="xlmr", vocab_size=250002, max_position_embeddings=514,
             type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)
_BERT = dict(flavour="bert", max_position_embeddings=512, type_vocab_size=2,
             pad_token_id=0, layer_norm_eps=1e-12, use_pooler=True)

PRESETS: dict[str, ModelConfig] = {
    # Exact dimensions of the public checkpoints.
    "xlmr-base": ModelConfig(**_XLMR, hidden_size=768, num_layers=12, num_heads=12,
                             intermediate_size=3072),
    "xlmr-large": ModelConfig(**_XLMR, hidden_size=1024, num_layers=24, num_heads=16,
                              intermediate_size=4096),
    "mbert-base": ModelConfig(**_BERT, vocab_size=119547, hidden_size=768, num_layers=12,
                              num_heads=12, intermediate_size=3072),
    # Small models for tests and the CPU demo.
    "tiny": ModelConfig(**{**_XLMR, "vocab_size": 1024}, hidden_size=64, num_layers=2,
                        num_heads=4, intermediate_size=128),
    "tiny-bert": ModelConfig(**{**_BERT, "vocab_size": 1024}, hidden_size=64, num_layers=2,
                             num_heads=4, intermediate_size=128),
}


def preset(name: str, **overrides) -> ModelConfig:
  """Returns the named preset, optionally with fields replaced."""
  try:
    config = PRESETS[name]
  except KeyError:
    raise InputError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}") from None
  return config.replace(**overrides) if overrides else config


# Default mapping from logical axes to mesh axes (MaxText style): batch over
# data and fsdp, parameters' embed dimension over fsdp (ZeRO-3 style), and the
# wide dimensions over tensor (Megatron style).
DEFAULT_RULES: tuple[tuple[str, tuple[str, ...] | str | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("layers", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh shape and the logical-to-mesh axis rules.

  `shape` is (data, fsdp, tensor); -1 in one place means "all remaining
  devices".
  """

  shape: tuple[int, int, int] = (-1, 1, 1)
  axis_names: tuple[str, str, str] = ("data", "fsdp", "tensor")
  rules: tuple[tuple[str, tuple[str, ...] | str | None], ...] = DEFAULT_RULES


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where batches come from (`kmlm_jax.training.data`, `kmlm_jax.data`).

  mixture: a mixture or single task of `kmlm_jax.data.mixtures` (e.g.
  "kmlm_mix", "cc100_fr", "prixlm") or "synthetic"; corpus_dir: a `kmlm-jax
  kg build` directory (None: the embedded sample KG); text_pattern: text
  files with a `{lang}` field (None: the embedded UDHR text); vocab: the
  tokenizer (None: the real XLM-R tokenizer.json); cache_dir: the token cache
  (None: ~/.cache/kmlm_jax/token_cache/DIGEST, built on first use).
  seq_length T and max_predictions P fix the batch shapes; batch_size is
  global (rows per step, all hosts). input_shards: U independent input
  shards making every global batch (0: the largest divisor of batch_size up
  to 64; the process count must divide it, also on resume); block_examples:
  examples masked and packed together; workers: processes computing blocks
  ahead (0: in the training process). language_temperature: text languages
  are sampled proportional to n ** (1 / t) (XLM-R: t = 3.33).
  """

  mixture: str = "kmlm_mix"
  corpus_dir: str | None = None
  text_pattern: str | None = None
  vocab: str | None = None
  cache_dir: str | None = None
  seq_length: int = allowed_field(128, low=MIN_SEQ_LENGTH)
  max_predictions: int = allowed_field(32, low=1)
  batch_size: int = allowed_field(8, low=1)
  seed: int = allowed_field(0, low=0)
  pack: bool = True
  # Relative rates of the three streams in the KMLM mixtures.
  rate_mlm: float = allowed_field(1.0, low=0)
  rate_knowledge: float = allowed_field(1.0, low=0)
  rate_reasoning: float = allowed_field(1.0, low=0)
  language_temperature: float = allowed_field(1.0, low=0, low_open=True)
  input_shards: int = allowed_field(0, low=0)
  block_examples: int = allowed_field(1024, low=1)
  workers: int = allowed_field(0, low=0)
  # Which tokens of a knowledge sample may be masked: "entities" (kmlm-jax: entity and
  # relation tokens) or "original" (KMLM's collator: every non-special token, linkers
  # then forced to <mask> without loss).
  mask_scope: str = allowed_field("entities", choices=("entities", "original"))
  # Non-UTF-8 text lines: a counted skip instead of an error.
  skip_bad_lines: bool = False


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW of every trainer (`kmlm_jax.training.optimizer`): `schedule` "linear"
  warms up over `warmup_steps` then decays linearly to 0 at `steps`; "constant"
  keeps `learning_rate`. Weight decay applies to matrices only."""

  learning_rate: float
  steps: int
  warmup_steps: int = 0
  weight_decay: float = 0.0
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  grad_clip_norm: float = 1.0
  schedule: Literal["linear", "constant"] = "linear"
  opt_type: Literal["adamw", "adafactor"] = "adamw"
  mu_dtype: Literal["float32", "bfloat16"] = "float32"  # dtype of Adam's first moment


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation and bookkeeping of a pretraining run (paper: KMLM A.1)."""

  steps: int = allowed_field(100, low=1)
  learning_rate: float = allowed_field(5e-5, low=0)
  warmup_steps: int = allowed_field(100, low=0)
  weight_decay: float = allowed_field(0.0, low=0)
  adam_b1: float = allowed_field(0.9, low=0, high=1, high_open=True)
  adam_b2: float = allowed_field(0.999, low=0, high=1, high_open=True)
  adam_eps: float = allowed_field(1e-8, low=0)
  grad_clip_norm: float = allowed_field(1.0, low=0)  # 0: no clipping
  grad_accum_steps: int = allowed_field(1, low=1)
  # L = L_MLM + alpha * (L_K + L_L)
  alpha: float = allowed_field(0.3, low=0)
  seed: int = 0
  checkpoint_every: int = allowed_field(100, low=1)
  keep_checkpoints: int = allowed_field(3, low=1)
  async_checkpointing: bool = True
  log_every: int = allowed_field(10, low=1)
  # Validation every `eval_every` steps (0: none): MLM loss and accuracy per stream on
  # `eval_batches` batches of the held-out split, and the knowledge metrics on the first
  # `eval_knowledge_examples` items of each evaluation set (0: none).
  eval_every: int = allowed_field(0, low=0)
  eval_batches: int = allowed_field(4, low=1)
  eval_knowledge_examples: int = allowed_field(64, low=0)
  # Keep the checkpoint with the best value of this validation metric (e.g.
  # "validation/mlm/loss"; names ending in "loss" are minimised, others maximised) besides
  # the newest `keep_checkpoints`; none: keep only the newest.
  keep_best: str | None = None
  # Stop after this many validations without a better `keep_best` metric (0: never).
  early_stop_patience: int = allowed_field(0, low=0)
  # What WORKDIR/model holds at the end: the "last" parameters, or the "best" checkpoint's.
  export: str = allowed_field("last", choices=("last", "best"))
  # Adam ("adamw", KMLM A.1) or Adafactor; `mu_dtype` stores Adam's first moment in bf16.
  opt_type: str = allowed_field("adamw", choices=("adamw", "adafactor"))
  mu_dtype: str = allowed_field("float32", choices=("float32", "bfloat16"))
  # Profile steps A..B-1 with `jax.profiler` into WORKDIR/profile (empty: no profile).
  profile_steps: tuple[int, ...] = ()
  # Persistent XLA compilation cache (`jax_compilation_cache_dir`); none: no cache.
  jax_cache_dir: str | None = None
  # Weights & Biases project besides TensorBoard (`pip install kmlm-jax[wandb]`).
  wandb_project: str | None = None
  # Peak FLOP/s of one device for MFU; 0: look it up from the device kind.
  peak_flops_per_device: float = allowed_field(0.0, low=0)

  def optimizer(self) -> OptimizerConfig:
    return OptimizerConfig(self.learning_rate, self.steps, self.warmup_steps, self.weight_decay,
                           self.adam_b1, self.adam_b2, self.adam_eps, self.grad_clip_norm,
                           opt_type=self.opt_type, mu_dtype=self.mu_dtype)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything a `kmlm-jax train` run needs; `configs/*.py` return one.

  init_from: a kmlm-jax model checkpoint, a training checkpoint
  WORKDIR/checkpoints/STEP, or a work directory WORKDIR (its newest step) to
  start from (its parameters only; convert a HF checkpoint with `kmlm-jax
  convert --from-hf` first); None starts from a random initialisation of `model`.
  """

  name: str
  model: ModelConfig
  data: DataConfig = DataConfig()
  train: TrainConfig = TrainConfig()
  mesh: MeshConfig = MeshConfig()
  init_from: str | None = None

  def validate(self) -> "ExperimentConfig":
    """This config, checked without devices or files: every field's type and range
    (`check_fields`) and the sections against each other. Raises an `InputError` naming
    the key and the allowed values."""
    check_fields(self)
    data, train, model = self.data, self.train, self.model
    positions = model.max_length
    if data.seq_length > positions:
      raise InputError(
          f"data.seq_length: {data.seq_length} does not fit the model's position table "
          f"(model.max_position_embeddings={model.max_position_embeddings}, positions from "
          f"{model.position_offset}); expected an integer in [{MIN_SEQ_LENGTH}, {positions}]")
    if data.max_predictions > data.seq_length:
      raise InputError(f"data.max_predictions: {data.max_predictions} is not allowed; "
                       f"expected an integer in [1, data.seq_length={data.seq_length}]")
    for key, parts in (("train.grad_accum_steps", train.grad_accum_steps),
                       ("data.input_shards", data.input_shards)):
      if parts and data.batch_size % parts:
        raise InputError(f"{key}: {parts} does not divide data.batch_size={data.batch_size}; "
                         f"expected one of {_divisors(data.batch_size)}"
                         + (" or 0 (automatic)" if key == "data.input_shards" else ""))
    if train.profile_steps and (len(train.profile_steps) != 2
                                or not 1 <= train.profile_steps[0] < train.profile_steps[1]):
      raise InputError(f"train.profile_steps: {train.profile_steps} is not allowed; expected "
                       "two steps A,B with 1 <= A < B (profiles steps A..B-1), or empty")
    for key, asks in (("train.early_stop_patience", train.early_stop_patience > 0),
                      ("train.export", train.export == "best")):
      if asks and not train.keep_best:
        raise InputError(f"{key}: needs train.keep_best=METRIC (the validation metric "
                         "that decides which checkpoint is best)")
    if train.keep_best and not train.eval_every:
      raise InputError("train.keep_best: needs train.eval_every > 0 (validation computes "
                       "the metric)")
    check_mesh_shape(self.mesh)
    return self


def check_mesh_shape(mesh: MeshConfig) -> None:
  """One size per mesh axis, each >= 1 or a single -1 (all remaining devices)."""
  shape = mesh.shape
  if (len(shape) != len(mesh.axis_names) or shape.count(-1) > 1
      or any(isinstance(s, bool) or not isinstance(s, int) or (s < 1 and s != -1)
             for s in shape)):
    raise InputError(f"mesh.shape: {','.join(map(str, shape))} is not allowed; expected "
                     f"{len(mesh.axis_names)} sizes ({', '.join(mesh.axis_names)}), each >= 1 "
                     "or one of them -1 (all remaining devices), e.g. mesh.shape=-1,1,1")


def override(config, assignments) -> "ExperimentConfig":
  """Applies "a.b=value" strings to a nested frozen config.

  Values are parsed as the field's current type (int, float, bool, str, None
  via "none"; tuples as comma-separated values).
  """
  for assignment in assignments:
    if "=" not in assignment:
      raise InputError(f"override {assignment!r} is not of the form key=value")
    key, raw = assignment.split("=", 1)
    config = _set(config, key.split("."), raw, key)
  return config


def _set(obj, path, raw, key):
  name = path[0]
  fields = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
  if name not in fields:
    raise InputError(f"unknown config key {key!r}; {name!r} is not one of {fields}")
  current = getattr(obj, name)
  allowed = next(f for f in dataclasses.fields(obj) if f.name == name).metadata.get("allowed")
  if len(path) > 1:
    value = _set(current, path[1:], raw, key)
  elif allowed is not None and raw in allowed.choices:  # e.g. model.remat_policy=none
    value = raw
  elif raw.lower() == "none" and not has_type(None, type_hints(type(obj))[name]):
    raise InputError(f"config key {key!r}: none is not allowed; expected "
                     f"{expected_value(obj, name)}")
  else:
    value = _parse(raw, current, key, type_hints(type(obj))[name])
  return dataclasses.replace(obj, **{name: value})


def _parse(raw: str, current, key: str, hint=None):
  if raw.lower() == "none":
    return None
  if typing.get_origin(hint) is tuple and not current:  # an empty default: its type says
    kind = typing.get_args(hint)[0]
    try:
      return tuple(kind(v) for v in raw.split(",") if v.strip())
    except ValueError:
      raise InputError(f"config key {key!r}: cannot parse {raw!r} as comma-separated "
                       f"{kind.__name__} values") from None
  try:
    if isinstance(current, bool):
      if raw.lower() not in ("true", "false", "1", "0"):
        raise ValueError(raw)
      return raw.lower() in ("true", "1")
    if isinstance(current, int):
      return int(raw)
    if isinstance(current, float):
      return float(raw)
    if isinstance(current, tuple):
      kind = type(current[0]) if current else str
      return tuple(kind(v) for v in raw.split(","))
  except ValueError:
    raise InputError(f"config key {key!r}: cannot parse {raw!r} as "
                     f"{type(current).__name__}") from None
  return raw
