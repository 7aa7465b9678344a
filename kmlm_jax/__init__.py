"""kmlm-jax: knowledge-enhanced multilingual LM pretraining in JAX/Flax."""

from kmlm_jax.data import quiet_tf as _quiet_tf

__version__ = "0.1.0"

_quiet_tf.install()  # TensorFlow (I/O only) without CUDA probe noise, GPUs left to JAX
