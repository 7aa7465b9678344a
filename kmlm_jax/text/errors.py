"""Input errors of the text pipeline, importable without TensorFlow or seqio."""

from kmlm_jax.errors import InputError


class CorpusError(InputError):
  """A corpus directory or text file that cannot feed a task; names the path."""
