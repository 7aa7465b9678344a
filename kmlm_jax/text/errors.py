"""Input errors of the text pipeline, importable without TensorFlow or seqio."""


class CorpusError(ValueError):
  """A corpus directory or text file that cannot feed a task; names the path."""
