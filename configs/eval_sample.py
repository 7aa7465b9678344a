"""Evaluation on the embedded sample: XLR and probing of the demo's checkpoints.

  make demo   # writes out/demo/{KMLM-Mix,MLM-only}/model, out/demo/kg, out/demo/vocab
  kmlm-jax eval --config configs/eval_sample.py --ckpt out/demo/KMLM-Mix/model \
      --baseline out/demo/MLM-only/model --out out/eval
"""

from kmlm_jax.evaluation.finetune import FinetuneConfig
from kmlm_jax.evaluation.run import EvalConfig


def get_config() -> EvalConfig:
  return EvalConfig(
      corpus_dir="out/demo/kg",
      vocab="out/demo/vocab/tokenizer.json",
      tasks=("xlr", "probe", "probe_rank"),
      # 85 English training items; every XLR sequence fits in 80 tokens.
      finetune=FinetuneConfig(steps=60, batch_size=8, learning_rate=1e-3, warmup_steps=6,
                              eval_every=20, seeds=(0, 1, 2), max_length=80),
      probe_max_tokens=4)
