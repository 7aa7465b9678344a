"""Knowledge adapters on XLM-R base, with the paper's hyper-parameters (appendix A).

Start from a converted checkpoint and a Wikidata build:

  kmlm-jax convert --from-hf xlm-roberta-base/ --to checkpoints/xlm-roberta-base
  kmlm-jax kg build --wikidata-dump latest-all.json.bz2 --langs en,vi,nl,de,fr,it,es,ja,ko,zh \\
      --out out/wikidata
  kmlm-jax adapters train --config configs/adapters_xlmr_base.py \\
      data.trex=data/trex/re-nlg_*.json
  kmlm-jax adapters eval --config configs/adapters_xlmr_base.py

Paper: AdapterHub adapters in every layer (reduction factor 16, ReLU),
batch 128, Adam, learning rate 1e-4, 1e4 warm-up steps, InfoNCE with
in-batch negatives; EP sampled 94.2M alignments, TP / ES / TS 10 epochs.
The step counts below are a budget (one epoch of EP at 128 pairs per step
is about 736k steps); the paper does not give the fusion's steps (it
trains the fusion during fine-tuning), so the fusion stage here is short.
Sentences for ES / TS come from T-REx (`data.trex`, globs allowed) and
from the KG triples (the probe templates where a relation has one, else
`h r t.`).
"""

from kmlm_jax.adapters.config import (AdapterDataConfig, AdapterEvalConfig,
                                      AdapterExperimentConfig, AdapterTrainConfig)
from kmlm_jax.config import MeshConfig, preset
from kmlm_jax.models.adapters import AdapterConfig


def get_config() -> AdapterExperimentConfig:
  return AdapterExperimentConfig(
      name="adapters-xlmr-base",
      model=preset("xlmr-base", use_mlm_head=False),
      init_from="checkpoints/xlm-roberta-base",
      adapters=AdapterConfig(names=("ep", "tp", "es", "ts"), reduction_factor=16),
      data=AdapterDataConfig(corpus_dir="out/wikidata", seq_length=64, pooling="masked",
                             sentences="templates"),
      train=AdapterTrainConfig(adapter_steps=100_000, fusion_steps=10_000, batch_size=128,
                               learning_rate=1e-4, warmup_steps=10_000, temperature=0.1,
                               log_every=100),
      eval=AdapterEvalConfig(modes=("base", "fusion"), batch_size=512),
      mesh=MeshConfig(shape=(-1, 1, 1)),
  )
