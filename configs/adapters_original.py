"""Knowledge adapters on XLM-R base with the original code's schedule and optimizer.

yifan-h/Multilingual_Space `src/tasks.py` (`ki_mlkg`) and `src/main.py`'s defaults:
TP and EP adapters alternating on the same batches (a TP step, then an EP step), then
TS and ES likewise; then 16 rounds of fusion training at half the batch, each a phrase
part (10% of the batches, TP then EP data) and a sentence part (20%, TS then ES data);
every phase with a fresh AdamW (lr 1e-4, weight decay 1e-4 on every parameter, no
clipping) and transformers' cosine schedule with 5 hard restarts after 1e4 warm-up
steps, counted in optimizer steps (two per batch); InfoNCE at temperature 0.1 over
the mean of all positions, padding included (`pooling="unmasked"`). Differences that
remain: EP / ES pairs come from their own sources (the original drew them from the TP /
TS batch's triples), and the original's missing `zero_grad` between the two steps of a
batch is not copied. The step counts are a budget (the original ran 10 epochs of the triples per
adapter phase and one epoch per fusion part).

  kmlm-jax adapters train --config configs/adapters_original.py data.trex=data/trex/re-nlg_*.json
  kmlm-jax adapters eval --config configs/adapters_original.py

On one CPU, the tiny config with this schedule (a few steps):
  kmlm-jax adapters train --config configs/adapters_tiny.py --workdir /tmp/wd_original \
      train.schedule=original train.adapter_steps=20 train.fusion_steps=20 \
      train.fusion_rounds=2 train.warmup_steps=10
"""

from kmlm_jax.adapters.config import (AdapterDataConfig, AdapterEvalConfig,
                                      AdapterExperimentConfig, original_train)
from kmlm_jax.config import MeshConfig, preset
from kmlm_jax.models.adapters import AdapterConfig


def get_config() -> AdapterExperimentConfig:
  return AdapterExperimentConfig(
      name="adapters-original",
      model=preset("xlmr-base", use_mlm_head=False),
      init_from="checkpoints/xlm-roberta-base",
      adapters=AdapterConfig(names=("ep", "tp", "es", "ts"), reduction_factor=16),
      data=AdapterDataConfig(corpus_dir="out/wikidata", seq_length=64, pooling="unmasked",
                             sentences="templates"),
      train=original_train(adapter_steps=100_000, fusion_steps=20_000, temperature=0.1,
                           log_every=100),
      eval=AdapterEvalConfig(modes=("base", "fusion"), batch_size=512),
      mesh=MeshConfig(shape=(-1, 1, 1)),
  )
