"""Configs of a knowledge-adapter run: `configs/adapters_*.py` return an `AdapterExperimentConfig`.

Any field can be overridden as `key=value` (`train.adapter_steps=10`,
`data.pooling=unmasked`, `init_from=CKPT`), as for `kmlm-jax train`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

from kmlm_jax.config import (MeshConfig, ModelConfig, allowed_field, expected_value, has_type,
                             type_hints)
from kmlm_jax.experiment import ConfigError, load_config
from kmlm_jax.models.adapters import FUSION, AdapterConfig

TASKS = ("alignment", "completion")


@dataclasses.dataclass(frozen=True)
class AdapterDataConfig:
  """Where the adapters' training pairs come from.

  corpus_dir: a `kmlm-jax kg build` output (None: the embedded sample,
  built once into WORKDIR/kg). vocab: tokenizer file or directory (None:
  the `init_from` checkpoint's tokenizer, else the real XLM-R).
  trex: T-REx files or glob patterns (JSON array or JSON lines) whose
  sentence/triple alignments feed the ES and TS adapters next to the
  generated sentences; trex_skip_bad: count and skip malformed documents
  instead of failing.
  sentences: how sentences are generated from KG triples for ES and TS:
  "templates" (the probe templates of `kg/data/probe_templates.json`,
  falling back to "h r t."), "kmlm" ("h r t." without linkers), "none".
  pooling: "masked" = mean over real tokens; "unmasked" = the original
  code's mean over all T positions, padding included.
  hold_out_alignment: keep an entity's l' label out of every training pair
  when (entity, l') is an alignment dev/test pair.
  """

  corpus_dir: str | None = None
  vocab: str | None = None
  trex: tuple[str, ...] = ()
  trex_skip_bad: bool = False
  sentences: str = allowed_field("templates", choices=("templates", "kmlm", "none"))
  seq_length: int = allowed_field(32, low=3)
  pooling: str = allowed_field("masked", choices=("masked", "unmasked"))
  hold_out_alignment: bool = True


@dataclasses.dataclass(frozen=True)
class AdapterTrainConfig:
  """How the adapters and the fusion train: `schedule` "staged" or "original".

  "staged" (the paper's description): `stages` run in this order, each with a fresh
  optimizer (AdamW, linear warm-up and decay, clipping); an adapter name trains that
  adapter for `adapter_steps` batches on its own data, "fusion" trains the fusion layer
  for `fusion_steps` on all adapters' data (one source per step, in turn).

  "original" (yifan-h/Multilingual_Space `src/tasks.py`, `ki_mlkg`; `stages` unused):
  1) phrase phase, `adapter_steps` batches: a TP step, then an EP step, each adapter
  with its own AdamW moments on one schedule that counts both (2 optimizer steps per
  batch); 2) sentence phase: TS then ES likewise; 3) `fusion_rounds` rounds of fusion
  training at half the batch size, each a phrase part (TP-data then EP-data steps on a
  random `fusion_fractions[0]` of `fusion_steps` batches) and a sentence part (TS / ES
  data on `fusion_fractions[1]`), each part with a fresh optimizer whose schedule spans
  2 x `fusion_steps`. Every optimizer: AdamW with decay on every parameter and
  `restarts` cosine hard restarts after `warmup_steps`. `original_train()` gives the
  original's values (lr 1e-4, weight decay 1e-4, 1e4 warm-up steps, no clipping, 5
  restarts, 16 rounds of 10% / 20%, batch 128, no fusion regularisation: its loop never
  added AdapterHub's). Not copied: its missing `zero_grad` between the two steps of a
  batch (the second step re-applied the first one's gradients).

  Paper (appendix A): batch 128, Adam, lr 1e-4, 1e4 warm-up steps.
  """

  stages: tuple[str, ...] = ("ep", "tp", "es", "ts", FUSION)
  schedule: str = allowed_field("staged", choices=("staged", "original"))
  adapter_steps: int = allowed_field(100, low=1)
  fusion_steps: int = allowed_field(100, low=1)
  batch_size: int = allowed_field(32, low=1)
  learning_rate: float = allowed_field(1e-4, low=0, low_open=True)
  warmup_steps: int = allowed_field(10, low=0)
  weight_decay: float = allowed_field(0.0, low=0)
  grad_clip_norm: float = allowed_field(1.0, low=0)
  temperature: float = allowed_field(0.1, low=0, low_open=True)
  # Also the right-to-left InfoNCE term (the original used left-to-right only).
  symmetric: bool = False
  # AdapterHub's fusion regularisation: weight of sum ||V - I||^2.
  fusion_value_l2: float = allowed_field(0.01, low=0)
  seed: int = 0
  log_every: int = allowed_field(10, low=1)
  # The "original" schedule's cosine restarts, fusion rounds and batch fractions.
  restarts: int = allowed_field(5, low=1)
  fusion_rounds: int = allowed_field(16, low=1)
  fusion_fractions: tuple[float, float] = (0.1, 0.2)


# The original schedule's values (src/main.py defaults and src/tasks.py).
ORIGINAL_TRAIN = {"schedule": "original", "learning_rate": 1e-4, "weight_decay": 1e-4,
                  "warmup_steps": 10_000, "grad_clip_norm": 0.0, "restarts": 5,
                  "fusion_rounds": 16, "fusion_fractions": (0.1, 0.2), "batch_size": 128,
                  "fusion_value_l2": 0.0}
# The pairs that alternate on one batch in the original schedule's phases.
ORIGINAL_PHASES = (("phrase", ("tp", "ep")), ("sentence", ("ts", "es")))


def original_train(**changes) -> AdapterTrainConfig:
  """An `AdapterTrainConfig` of the original schedule with the original's values."""
  return AdapterTrainConfig(**{**ORIGINAL_TRAIN, **changes})


@dataclasses.dataclass(frozen=True)
class AdapterEvalConfig:
  """Cosine-retrieval evaluation. modes: "base" (no adapter), adapter names, "fusion"."""

  tasks: tuple[str, ...] = TASKS
  modes: tuple[str, ...] = ("base", FUSION)
  split: str = allowed_field("test", choices=("train", "dev", "test"))
  batch_size: int = allowed_field(128, low=1)
  # Knowledge-graph completion: leave out other known tails of (h, r).
  filtered: bool = True


@dataclasses.dataclass(frozen=True)
class AdapterExperimentConfig:
  """A knowledge-adapter run. init_from: a kmlm-jax model checkpoint (its model config
  replaces `model`); None: `model` randomly initialised with `train.seed`."""

  name: str
  model: ModelConfig
  adapters: AdapterConfig = AdapterConfig()
  data: AdapterDataConfig = AdapterDataConfig()
  train: AdapterTrainConfig = AdapterTrainConfig()
  eval: AdapterEvalConfig = AdapterEvalConfig()
  mesh: MeshConfig = MeshConfig()
  init_from: str | None = None

  def validate(self) -> "AdapterExperimentConfig":
    _check_fields(self)
    names = self.adapters.names
    stages = self.train.stages if self.train.schedule == "staged" else ()  # original: unused
    for stage in stages:
      if stage != FUSION and stage not in names:
        raise ConfigError(f"train.stages: {stage!r} is neither an adapter of {list(names)} "
                          f"nor {FUSION!r}")
    if FUSION in stages and not self.adapters.fusion:
      raise ConfigError("train.stages has 'fusion' but adapters.fusion=False")
    _check_schedule(self)
    for mode in self.eval.modes:
      if mode not in ("base", FUSION, *names):
        raise ConfigError(f"eval.modes: unknown mode {mode!r}")
    unknown = [t for t in self.eval.tasks if t not in TASKS]
    if unknown:
      raise ConfigError(f"eval.tasks: unknown {unknown}; known {TASKS}")
    return self


def _check_fields(config: AdapterExperimentConfig) -> None:
  """Raises a ConfigError naming the key and the allowed values of the first field of data,
  train or eval of the wrong type or out of range (before anything is built or compiled).
  Unlike `Allowed.admits`, +inf passes (it makes a run stop with `NonFiniteLoss`)."""
  for section in ("data", "train", "eval"):
    part = getattr(config, section)
    for field in dataclasses.fields(part):
      value, allowed = getattr(part, field.name), field.metadata.get("allowed")
      if allowed and not (has_type(value, type_hints(type(part))[field.name])
                          and (allowed.admits(value) or value == math.inf)):
        raise ConfigError(f"{section}.{field.name}: expected "
                          f"{expected_value(part, field.name)}, got {value!r}")


def _check_schedule(config: AdapterExperimentConfig) -> None:
  """The "original" schedule has its four adapters, the fusion and a batch that halves."""
  t = config.train
  if t.schedule != "original":
    return
  missing = [n for _, pair in ORIGINAL_PHASES for n in pair if n not in config.adapters.names]
  if missing:
    raise ConfigError(f"train.schedule: 'original' trains the adapters tp, ep, ts and es; "
                      f"adapters.names lacks {missing}")
  if not config.adapters.fusion:
    raise ConfigError("train.schedule: 'original' trains the fusion; adapters.fusion=False")
  if t.batch_size < 2:
    raise ConfigError(f"train.batch_size: the 'original' schedule halves it for the fusion, "
                      f"expected >= 2, got {t.batch_size}")
  fractions = t.fusion_fractions
  if len(fractions) != 2 or not all(isinstance(f, (int, float)) and 0 < f <= 1
                                    for f in fractions):
    raise ConfigError(f"train.fusion_fractions: expected two numbers in (0, 1], got "
                      f"{fractions!r}")


def load_adapter_config(path: str | Path, overrides: Sequence[str] = ()) -> AdapterExperimentConfig:
  """Loads `get_config()` from a Python file and applies `key=value` overrides."""
  return load_config(path, overrides, expected=AdapterExperimentConfig)
