"""`CorpusDir`: the one reader of what `kmlm-jax kg build` writes.

Every consumer (the token cache, evaluation, adapters, the demos) asks a
`CorpusDir` for paths and counts instead of joining path pieces itself.
`CorpusDir.sample()` builds the embedded sample KG's corpora on first use
(an explicit call; nothing is built at import).
"""

from __future__ import annotations

import functools
from pathlib import Path

from kmlm_jax.kg.errors import KGInputError

SAMPLE_VERSION = "5"  # 4: validation split; 5: no alias sample without an alias


class CorpusDir:
  """A `kg build` output directory (see `kmlm_jax.kg.build`)."""

  def __init__(self, path: Path | str):
    self.path = Path(path)

  def __repr__(self) -> str:
    return f"CorpusDir({str(self.path)!r})"

  @functools.cached_property
  def manifest(self) -> dict:
    from kmlm_jax.kg.build import read_manifest
    return read_manifest(self.path)

  @property
  def languages(self) -> tuple[str, ...]:
    return tuple(self.manifest["languages"])

  def shards(self, stream: str, split: str = "train") -> list[Path]:
    """The TFRecord shards of one corpus stream (code_switched, parallel, ...), of the
    corpora (split "train") or of the validation split ("validation")."""
    streams = self.manifest["streams"]
    if split == "validation":
      if "validation" not in self.manifest:
        raise KGInputError(f"{self.path}/manifest.json: no validation split (built by an older "
                           "kmlm-jax); rebuild it with `kmlm-jax kg build`")
      streams = self.manifest["validation"]["streams"]
    entry = streams.get(stream)
    if entry is None:
      raise KGInputError(f"{self.path}: no {stream!r} stream in manifest.json "
                         f"(it has {sorted(streams)})")
    paths = [self.path / p for p in entry["shards"]]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
      raise KGInputError(f"{self.path}: {len(missing)} shard(s) of {stream!r} listed in "
                         f"manifest.json are missing, e.g. {missing[0]}")
    return paths

  @property
  def graph_path(self) -> Path:
    return self.path / "graph.npz"

  def graph(self):
    from kmlm_jax.kg.graph import KnowledgeGraph
    return KnowledgeGraph.load(self.graph_path)

  def eval_path(self, *parts: str) -> Path:
    """A file of the held-out evaluation sets, e.g. `eval_path("lp", "en.test.tsv")`."""
    return self.path.joinpath("eval", *parts)

  @staticmethod
  def sample_path(cache_root: Path | str | None = None) -> Path:
    """Where `sample()` keeps the embedded sample's corpora (default ~/.cache/kmlm_jax/corpora)."""
    root = Path(cache_root) if cache_root else Path.home() / ".cache" / "kmlm_jax" / "corpora"
    return root / f"sample-{SAMPLE_VERSION}"

  @classmethod
  def sample(cls, cache_root: Path | str | None = None) -> "CorpusDir":
    """The embedded sample KG's corpora, built into `sample_path(cache_root)` unless there."""
    directory = cls.sample_path(cache_root)
    if not (directory / "manifest.json").exists():
      from kmlm_jax.kg.sample import build_sample_corpora
      try:
        build_sample_corpora(directory)
      except FileExistsError:  # another process built it meanwhile
        if not (directory / "manifest.json").exists():
          raise
    return cls(directory)
