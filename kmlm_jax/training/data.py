"""The configured batch source of a run: the token-cache input or synthetic rows.

`prepare_input(config)` builds (once) and opens the token cache that the
data config names and returns the `InputSpec` of the run's global order;
`make_batches(...)` opens this process's batches at a saved input state;
`make_validation_batches(...)` gives fixed batches of the cache's
validation split (held-out text lines and the `kg build` validation
corpora, never trained on).
Input states are small JSON-able dicts saved in every checkpoint:
`{"kind": "cache", "num_shards": U, "blocks": [[k, o], ...]}` or
`{"kind": "synthetic", "position": n}`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import resources
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from kmlm_jax.config import DataConfig
from kmlm_jax.data import cache, mixtures, packing
from kmlm_jax.data.input import Batches, InputSpec, default_input_shards
from kmlm_jax.text.errors import CorpusError


def udhr_pattern() -> str:
  """The embedded UDHR text, one file per language (the default `data.text_pattern`)."""
  return str(resources.files("kmlm_jax.text") / "data" / "udhr" / "{lang}.txt")


def cache_spec(config: DataConfig) -> tuple[cache.CacheSpec, list[str]]:
  """The cache a data config reads (embedded defaults filled in) and the sources it
  needs. Reads at most the corpus manifest; builds nothing."""
  from kmlm_jax.kg.corpus_dir import CorpusDir
  from kmlm_jax.kg.sample import KMLM_LANGUAGES
  from kmlm_jax.text.vocab import default_vocab_path
  if config.corpus_dir:
    corpus, languages = config.corpus_dir, CorpusDir(config.corpus_dir).languages
  else:  # the embedded sample, in the KMLM paper's languages
    corpus, languages = str(CorpusDir.sample_path()), tuple(KMLM_LANGUAGES)
  spec = cache.CacheSpec(vocab=config.vocab or default_vocab_path(),
                         seq_length=config.seq_length, corpus_dir=corpus,
                         text_pattern=config.text_pattern or udhr_pattern(),
                         languages=languages, skip_bad_lines=config.skip_bad_lines)
  return spec, mixtures.sources_needed(config.mixture, spec.languages)


def default_cache_dir(spec: cache.CacheSpec) -> Path:
  """~/.cache/kmlm_jax/token_cache/DIGEST, DIGEST naming the corpus, text, vocabulary, T,
  the cache format and the text validation fraction."""
  key = json.dumps([spec.corpus_dir, spec.text_pattern, cache.vocab_fingerprint(spec.vocab),
                    spec.seq_length, spec.skip_bad_lines, cache.FORMAT,
                    spec.validation_fraction])
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  return Path.home() / ".cache" / "kmlm_jax" / "token_cache" / digest


def mixture_rates(config: DataConfig) -> mixtures.MixtureRates:
  return mixtures.MixtureRates(config.rate_mlm, config.rate_knowledge, config.rate_reasoning)


def _cache_dir(config: DataConfig, spec: cache.CacheSpec) -> Path:
  return Path(config.cache_dir) if config.cache_dir else default_cache_dir(spec)


def check_input(config: DataConfig, model_vocab_size: int | None = None) -> None:
  """Checks what the input of a run needs before anything is built or compiled: rates
  that leave the mixture a source, a token cache (if present) built for this tokenizer and
  T, text files for each text source still to tokenize, a tokenizer no larger than
  `model_vocab_size`, and a Prix-LM tokenizer for Prix-LM sources. Raises a `CorpusError`
  naming the key. Reads only JSON files (the tokenizer's size without loading it)."""
  from kmlm_jax.text import prixlm
  from kmlm_jax.text.vocab import tokenizer_summary
  if config.mixture == "synthetic":
    return
  if not mixtures.members(config.mixture, mixture_rates(config)):
    raise CorpusError(f"data.rate_mlm, data.rate_knowledge, data.rate_reasoning: all 0 leave "
                      f"the mixture {config.mixture!r} nothing to read; expected one > 0")
  spec, sources = cache_spec(config)
  cache_dir = _cache_dir(config, spec)
  meta = None
  if (cache_dir / "cache.json").exists():
    meta = cache.read_meta(cache_dir)
    cache.check_matches(cache_dir, meta, spec.vocab, spec.seq_length)
  missing = [s for s in sources if s not in (meta or {}).get("sources", {})]
  cache.check_text_files(spec, missing)
  prix = [s for s in missing if s in ("triple", "link")]
  size, added = ((meta["vocab"]["size"], ()) if meta and not prix
                 else tokenizer_summary(spec.vocab))
  where = f"data.vocab={config.vocab}" if config.vocab else \
      f"data.vocab (unset: the XLM-R tokenizer {spec.vocab})"
  if model_vocab_size is not None and size > model_vocab_size:
    raise CorpusError(f"model.vocab_size: {model_vocab_size} is smaller than the {size} tokens "
                      f"of {where}; expected model.vocab_size >= {size} (or a smaller data.vocab)")
  if prix:
    prixlm.check_vocabulary(added, where, spec.languages if "link" in prix else ())


def build_cache(config: DataConfig, *, runner: str = "direct", beam_options: str = "",
                progress: bool = True) -> tuple[Path, dict, list[str]]:
  """Builds the cache sources the data config needs that are missing; returns
  (cache directory, cache.json, sources)."""
  spec, sources = cache_spec(config)
  cache_dir = _cache_dir(config, spec)
  if not config.corpus_dir and any(not s.startswith("text.") for s in sources):
    from kmlm_jax.kg.corpus_dir import CorpusDir
    CorpusDir.sample()  # builds the embedded sample's corpora on first use
  meta = cache.build(cache_dir, spec, sources, runner=runner, beam_options=beam_options,
                     progress=progress)
  return cache_dir, meta, sources


def prepare_input(config: DataConfig, *, build: bool = True, progress: bool = True,
                  split: str = cache.TRAIN) -> InputSpec:
  """Builds the missing cache sources (if `build`) and returns the `InputSpec` of the run's
  training order (or, with `split="validation"`, of the validation split's order)."""
  spec, sources = cache_spec(config)
  cache_dir = _cache_dir(config, spec)
  if build:
    build_cache(config, progress=progress)
  opened = cache.TokenCache(cache_dir, spec.vocab, config.seq_length)
  counts = {s: opened.source(s, split).num_examples for s in sources}
  try:
    weights = mixtures.source_weights(config.mixture, mixture_rates(config), counts,
                                      spec.languages, config.language_temperature)
  except CorpusError as e:
    if split == cache.TRAIN:
      raise
    raise CorpusError(f"{cache_dir}: the {split} split: {e}") from None
  shards = config.input_shards or default_input_shards(config.batch_size)
  if config.batch_size % shards:
    raise CorpusError(f"data.batch_size={config.batch_size} is not divisible by "
                      f"data.input_shards={shards}")
  return InputSpec(str(cache_dir), tuple(weights), tuple(weights.values()),
                   tuple(counts[s] for s in weights), config.seed, config.seq_length,
                   config.max_predictions, shards, config.batch_size // shards,
                   config.block_examples, config.pack, split, config.mask_scope)


class SyntheticBatches:
  """Random packed rows, a deterministic function of (seed, position), for
  benchmarks and tests without an input pipeline (`data.mixture="synthetic"`).

  Rows hold 1-3 examples; about 15% of tokens carry loss, spread over the
  three streams. Ids are drawn from [5, vocab_size). The position counts
  global batches, so it does not depend on the number of processes.
  """

  def __init__(self, config: DataConfig, vocab_size: int, share: int = 0, shares: int = 1,
               start: int = 0):
    self.config, self.vocab_size = config, vocab_size
    self.share, self.rows = share, config.batch_size // shares
    self.position = start

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    c = self.config
    rng = np.random.default_rng([c.seed, self.position, self.share])
    lengths = rng.integers(8, max(9, c.seq_length // 2), 8 * self.rows)  # >= 2 per row
    n = int(lengths.sum())
    ids = rng.integers(5, self.vocab_size, n).astype(np.int32)
    rows, _ = packing.pack_block(ids, ids, rng.random(n) < 0.15, np.ones(n, bool), lengths,
                                 rng.integers(0, 3, len(lengths)).astype(np.int32),
                                 packing.PackSpec(c.seq_length, c.max_predictions, pad_id=1))
    self.position += 1
    return {k: v[:self.rows] for k, v in rows.items()}

  def state(self) -> dict:
    return {"kind": "synthetic", "position": self.position}

  def close(self) -> None:
    pass


class CacheBatches(Batches):
  """`Batches` whose `state()` is the global input state (a collective across processes)."""

  def __init__(self, spec: InputSpec, share: int, shares: int, state: dict | None,
               workers: int):
    blocks = None
    if state is not None:
      if state.get("kind") != "cache":
        raise CorpusError(f"the checkpoint's input state is of kind {state.get('kind')!r}; "
                          "it cannot continue with data.mixture != synthetic")
      blocks = np.asarray(state["blocks"], np.int64).reshape(-1, 2)
    self.share = share
    super().__init__(spec, share, shares, blocks, workers)

  def state(self) -> dict:
    local = super().state()
    if jax.process_count() > 1:  # every host's part, tagged with its share; one per share
      parts = np.asarray(multihost_utils.process_allgather(
          np.concatenate([[[self.share, 0]], local])))
      first = {int(p[0, 0]): p[1:] for p in parts[::-1]}
      local = np.concatenate([first[s] for s in sorted(first)])
    return {"kind": "cache", "num_shards": self.spec.num_shards, "blocks": local.tolist()}


def make_batches(config: DataConfig, vocab_size: int, share: int = 0, shares: int = 1,
                 state: dict | None = None, spec: InputSpec | None = None):
  """The batch source of host share `share` of `shares` (`Partitioner.host_share`),
  continuing from `state` (None: the start)."""
  _check_shares(config, shares)
  if config.mixture == "synthetic":
    start = int((state or {}).get("position", 0))
    return SyntheticBatches(config, vocab_size, share, shares, start)
  spec = spec or prepare_input(config, build=share == 0)
  return CacheBatches(spec, share, shares, state, config.workers)


def _check_shares(config: DataConfig, shares: int) -> None:
  if config.batch_size % shares:
    raise CorpusError(f"data.batch_size={config.batch_size} is not divisible by the "
                      f"{shares} host shares")


def make_validation_batches(config: DataConfig, vocab_size: int, share: int, shares: int,
                            num_batches: int, build: bool = True) -> list[dict]:
  """`num_batches` batches of host share `share` of `shares` for validation: the same at
  every call, in the training batches' keys and shapes.

  They come from the token cache's validation split only (held-out text lines, the `kg
  build` validation corpora), mixed by the run's mixture and rates over the validation
  examples of its sources (a text language with no held-out line has no share), masked
  and packed by the training code from the start of that split's order (data.seed). The
  synthetic mixture has no held-out data: its validation batches are synthetic batches
  of seed + 1.
  """
  if config.mixture == "synthetic":
    it = make_batches(dataclasses.replace(config, seed=config.seed + 1), vocab_size,
                      share, shares)
  else:
    _check_shares(config, shares)
    spec = prepare_input(config, build=build, progress=False, split=cache.VALIDATION)
    it = Batches(spec, share, shares)
  try:
    return [next(it) for _ in range(num_batches)]
  finally:
    it.close()
