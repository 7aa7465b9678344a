"""kmlm-jax: knowledge-enhanced multilingual LM pretraining in JAX/Flax."""

__version__ = "0.1.0"
