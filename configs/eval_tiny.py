"""Evaluation of the README's quick-start run: zero-shot XLR and cloze probes.

  kmlm-jax kg build --sample --out out/kg
  kmlm-jax train --config configs/tiny.py --workdir workdir/tiny train.steps=200
  kmlm-jax eval --config configs/eval_tiny.py --ckpt workdir/tiny/model --out out/eval

The tokenizer is the checkpoint's own (`WORKDIR/model/tokenizer/`).
"""

from kmlm_jax.evaluation.finetune import FinetuneConfig
from kmlm_jax.evaluation.run import EvalConfig


def get_config() -> EvalConfig:
  return EvalConfig(
      corpus_dir="out/kg",
      tasks=("xlr", "probe"),
      finetune=FinetuneConfig(steps=20, batch_size=8, learning_rate=1e-3, warmup_steps=2,
                              eval_every=10, seeds=(0,), max_length=80),
      probe_max_tokens=4,
      max_probes=200)
