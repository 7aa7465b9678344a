"""Shared settings of the KMLM paper's runs (KMLM appendix A.1).

AdamW, lr 5e-5, weight decay 0, 100 warm-up steps then linear decay, one
epoch, max length 128, 15% MLM, alpha = 0.3, initialised from XLM-R or
mBERT. The paper feeds 9,600 sequences of each stream per update (three
forward passes); here one packed batch mixes the streams at equal example
rates, and `batch_size` counts packed rows of 128 tokens: 9,600 rows carry
about as many tokens as the paper's text batch, and more knowledge and
reasoning examples (they are short and several share a row). Steps: about
one epoch of the 260M CC100 sentences at 9,600 per update.

Convert the starting checkpoint first, e.g.
  kmlm-jax convert --from-hf /path/to/xlm-roberta-base --to checkpoints/xlm-roberta-base
point data.corpus_dir / data.text_pattern at the `kmlm-jax kg build`
output and the CC100 text, and build the token cache once before the
launch (shared storage, one directory per vocabulary and length):
  kmlm-jax data cache --config configs/xlmr_base_kmlm_mix.py data.corpus_dir=... \
      data.text_pattern='/data/cc100/{lang}/*.txt' data.cache_dir=/shared/cache [--runner beam]
XLM-R sampled CC100 languages with alpha = 0.3: data.language_temperature=3.33.
"""

from kmlm_jax.config import DataConfig, ExperimentConfig, MeshConfig, TrainConfig, preset

PAPER_TRAIN = TrainConfig(steps=27_000, learning_rate=5e-5, warmup_steps=100, weight_decay=0.0,
                          grad_clip_norm=1.0, alpha=0.3, checkpoint_every=1000,
                          keep_checkpoints=3, log_every=50, eval_every=1000)


def paper_run(name: str, model: str, mixture: str, init_from: str, *, batch_size: int = 9600,
              grad_accum_steps: int = 1, mesh_shape=(-1, 1, 1),
              text_pattern: str | None = None, vocab: str | None = None) -> ExperimentConfig:
  return ExperimentConfig(
      name=name,
      model=preset(model, dtype="bfloat16"),
      data=DataConfig(mixture=mixture, seq_length=128, max_predictions=32, batch_size=batch_size,
                      text_pattern=text_pattern, vocab=vocab),
      train=TrainConfig(**{**PAPER_TRAIN.__dict__, "grad_accum_steps": grad_accum_steps}),
      mesh=MeshConfig(shape=mesh_shape),
      init_from=init_from)
