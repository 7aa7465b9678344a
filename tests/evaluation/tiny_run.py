"""Small real inputs of `kmlm-jax eval`: a WordPiece tokenizer, a tiny BERT-flavour checkpoint
whose parameters load, a corpus directory with probes and link-prediction files, configs."""

from __future__ import annotations

import json
from pathlib import Path

from flax import nnx

from kmlm_jax import model_checkpoint as mc
from kmlm_jax.config import ModelConfig, preset
from kmlm_jax.models.encoder import Encoder

WORDS = ("afghanistan asia is located in the capital of paris france berlin germany europe "
         "japan tokyo a an . , city country continent").split()
PROBES = [{"lang": "en", "relation": "P30", "template": "[X] is located in [Y].",
           "subject": s, "object": o, "subject_id": f"Q{i}", "object_id": f"Q{i + 10}"}
          for i, (s, o) in enumerate([("Afghanistan", "Asia"), ("France", "Europe"),
                                      ("Japan", "Asia")])]
XLR = {"id": "x0", "lang": "en", "context": ["Paris is the capital of France."],
       "question": "What is the relation between Paris and France?",
       "choices": ["capital", "continent"], "label": 0}
LP_ENTITIES = "France\ten\nParis\ten\nBerlin\ten\nGermany\ten\n"
LP_TEST = "France\tcapital\tParis\ten\nGermany\tcapital\tBerlin\ten\n"


def wordpiece(path: Path) -> Path:
  """A WordPiece vocab.txt of 5 specials and `WORDS` (27 ids)."""
  path.mkdir(parents=True, exist_ok=True)
  specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  (path / "vocab.txt").write_text("\n".join(specials + list(WORDS)) + "\n")
  return path / "vocab.txt"


def model(**changes) -> ModelConfig:
  """A tiny BERT-flavour model config (vocabulary 32, 64 positions)."""
  return preset("tiny-bert", **{"vocab_size": 32, "hidden_size": 16, "num_heads": 2,
                                "intermediate_size": 32, "num_layers": 1,
                                "max_position_embeddings": 64, **changes})


def checkpoint(path: Path, **changes) -> Path:
  """A tiny BERT-flavour checkpoint with random parameters."""
  config = model(**changes)
  mc.save_model_checkpoint(path, config, mc.model_params(Encoder(config, rngs=nnx.Rngs(0))))
  return path


def config_only(path: Path, **changes) -> Path:
  """A checkpoint directory holding only model_config.json (what the checks before loading
  read)."""
  path.mkdir(parents=True)
  (path / "model_config.json").write_text(json.dumps({"model": model(**changes).architecture(),
                                                      "metadata": {}}))
  return path


def corpus(path: Path, probes=PROBES, lp: dict | None = None) -> Path:
  """A corpus directory (manifest, eval/probes.jsonl, English XLR items, and eval/lp/en.*
  files from `lp`: {"entities": text, "test": text, "filter": text})."""
  from kmlm_jax.kg.build import FORMAT
  (path / "eval" / "lp").mkdir(parents=True)
  (path / "eval" / "xlr").mkdir()
  for split in ("train", "dev", "test"):
    (path / "eval" / "xlr" / f"{split}.jsonl").write_text(json.dumps({**XLR, "split": split}))
  (path / "manifest.json").write_text(json.dumps({"format": FORMAT, "languages": ["en"],
                                                  "streams": {}}))
  (path / "eval" / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
  lp = {"entities": LP_ENTITIES, "test": LP_TEST, "filter": LP_TEST, **(lp or {})}
  for name, text in lp.items():
    (path / "eval" / "lp" / f"en.{name}.tsv").write_text(text)
  return path


def eval_config(path: Path, **fields) -> Path:
  """configs/eval_*.py returning EvalConfig(**fields); `finetune` given as a dict."""
  finetune = fields.pop("finetune", None)
  args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
  if finetune is not None:
    args += f", finetune=FinetuneConfig(**{finetune!r})"
  path.write_text("from kmlm_jax.evaluation.finetune import FinetuneConfig\n"
                  "from kmlm_jax.evaluation.run import EvalConfig\n"
                  f"def get_config():\n  return EvalConfig({args})\n")
  return path
