"""A tiny KMLM-Mix run that trains on one CPU (the demo and the tests).

Model: 2 layers, width 128, the real XLM-R tokenizer with the vocabulary
trimmed to the pieces of the embedded corpora (see `demo.py`), or the full
250,002 pieces when `model.vocab_size` is left as is.
"""

from kmlm_jax.config import DataConfig, ExperimentConfig, MeshConfig, TrainConfig, preset


def get_config() -> ExperimentConfig:
  return ExperimentConfig(
      name="tiny-kmlm-mix",
      model=preset("tiny", vocab_size=250002, hidden_size=128, num_heads=4,
                   intermediate_size=512, num_layers=2, max_position_embeddings=130),
      data=DataConfig(mixture="kmlm_mix", seq_length=128, max_predictions=32, batch_size=8),
      train=TrainConfig(steps=100, learning_rate=1e-3, warmup_steps=10, checkpoint_every=50,
                        log_every=10),
      mesh=MeshConfig(shape=(-1, 1, 1)),
  )
