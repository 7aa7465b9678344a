"""The configs: frozen dataclasses, so they can be hashed, compared and passed as static
arguments to `jax.jit`."""

from __future__ import annotations

import dataclasses
from typing import Literal

from kmlm_jax.errors import InputError

Flavour = Literal["xlmr", "bert"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Dimensions and behaviour of one encoder.

  `flavour` selects the two differences between the checkpoints we port:
  XLM-R (RoBERTa) positions start at `pad_token_id + 1` and it has one token
  type; BERT/mBERT positions start at 0 and it has two token types.
  """

  flavour: Flavour
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int
  pad_token_id: int
  layer_norm_eps: float
  hidden_act: str = "gelu"
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  initializer_range: float = 0.02
  use_pooler: bool = False
  use_mlm_head: bool = True
  # Compute dtype of matmuls and activations; parameters always stay fp32.
  dtype: str = "float32"
  # Recompute each layer's activations in the backward pass.
  remat: bool = False
  # Run the layers as one `lax.scan` (compile time independent of depth);
  # False unrolls them: a faster step for shallow models, slower compiles.
  scan_layers: bool = True

  def __post_init__(self):
    if self.flavour not in ("xlmr", "bert"):
      raise InputError(f"flavour must be 'xlmr' or 'bert', got {self.flavour!r}")
    if self.hidden_size % self.num_heads:
      raise InputError(
          f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
    if self.dtype not in ("float32", "bfloat16"):
      raise InputError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def position_offset(self) -> int:
    """Position id of the first real token (RoBERTa counts from pad + 1)."""
    return self.pad_token_id + 1 if self.flavour == "xlmr" else 0

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def architecture(self) -> dict:
    """The fields a checkpoint is (its parameters' names and shapes, its function)."""
    return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_SETTINGS}

  def with_run_settings(self, run: "ModelConfig") -> "ModelConfig":
    """This architecture computed as `run` asks (dtype, remat, scan_layers, dropout)."""
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
RUN_SETTINGS = ("dropout_rate", "attention_dropout_rate", "dtype", "remat", "scan_layers")

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
  seq_length: int = 128
  max_predictions: int = 32
  batch_size: int = 8
  seed: int = 0
  pack: bool = True
  # Relative rates of the three streams in the KMLM mixtures.
  rate_mlm: float = 1.0
  rate_knowledge: float = 1.0
  rate_reasoning: float = 1.0
  language_temperature: float = 1.0
  input_shards: int = 0
  block_examples: int = 1024
  workers: int = 0
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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation and bookkeeping of a pretraining run (paper: KMLM A.1)."""

  steps: int = 100
  learning_rate: float = 5e-5
  warmup_steps: int = 100
  weight_decay: float = 0.0
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  grad_clip_norm: float = 1.0
  grad_accum_steps: int = 1
  # L = L_MLM + alpha * (L_K + L_L)
  alpha: float = 0.3
  seed: int = 0
  checkpoint_every: int = 100
  keep_checkpoints: int = 3
  async_checkpointing: bool = True
  log_every: int = 10
  eval_every: int = 0  # 0: no periodic evaluation
  eval_batches: int = 4
  # Peak FLOP/s of one device for MFU; 0: look it up from the device kind.
  peak_flops_per_device: float = 0.0

  def optimizer(self) -> OptimizerConfig:
    return OptimizerConfig(self.learning_rate, self.steps, self.warmup_steps, self.weight_decay,
                           self.adam_b1, self.adam_b2, self.adam_eps, self.grad_clip_norm)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything a `kmlm-jax train` run needs; `configs/*.py` return one.

  init_from: a kmlm-jax model checkpoint to start from (convert a HF
  checkpoint with `kmlm-jax convert --from-hf` first); None starts from a
  random initialisation of `model`.
  """

  name: str
  model: ModelConfig
  data: DataConfig = DataConfig()
  train: TrainConfig = TrainConfig()
  mesh: MeshConfig = MeshConfig()
  init_from: str | None = None


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
  value = _set(current, path[1:], raw, key) if len(path) > 1 else _parse(raw, current, key)
  return dataclasses.replace(obj, **{name: value})


def _parse(raw: str, current, key: str):
  if raw.lower() == "none":
    return None
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
