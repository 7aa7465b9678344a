"""The token cache and the online input: exact resume (also across host counts),
workers, packed = unpacked, the Beam build, bad input, the seqio view."""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kmlm_jax.config import DataConfig, preset
from kmlm_jax.data import cache, masking, mixtures, packing
from kmlm_jax.data.input import Batches
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.text.errors import CorpusError
from kmlm_jax.text.vocab import default_vocab_path
from kmlm_jax.training import data as data_lib
from tests.data.conftest import LANGS, SOURCES

ROOT = Path(__file__).resolve().parents[2]


def tree(directory: Path) -> dict[str, str]:
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def _data(root, **kw):
  base = dict(mixture="kmlm_mix", corpus_dir=str(root / "kg"), cache_dir=str(root / "cache"),
              vocab=str(root / "vocab" / "tokenizer.json"), seq_length=64, max_predictions=12,
              batch_size=8, input_shards=4, block_examples=16)
  return DataConfig(**{**base, **kw})


@pytest.mark.slow
def test_beam_build_is_byte_identical(small, tmp_path):
  root, spec = small
  cache.build(tmp_path / "beam", spec, SOURCES, runner="beam", progress=False)
  assert tree(tmp_path / "beam") == tree(root / "cache")
  meta = cache.read_meta(root / "cache")
  assert set(meta["sources"]) == set(SOURCES)
  # Counted once, at build time; each line in one split.
  assert meta["sources"]["text.fr"]["lines"] + meta["validation"]["text.fr"]["lines"] == 50
  # A link is one example per direction.
  corpus = json.loads((root / "kg" / "manifest.json").read_text())
  assert meta["sources"]["link"]["examples"] == 2 * corpus["streams"]["link"]["samples"]


BUILDER = """
import dataclasses, json, sys
from kmlm_jax.data import cache
fields = json.loads(sys.argv[1])
spec = cache.CacheSpec(**{**fields, "languages": tuple(fields["languages"])})
cache.build(sys.argv[2], spec, sys.argv[3].split(","), progress=False)
"""


def _waiting_pids() -> set[int]:
  """Processes waiting for a file lock (Linux: '-> FLOCK ADVISORY WRITE PID ...')."""
  lines = Path("/proc/locks").read_text().splitlines()
  return {int(line.split()[5]) for line in lines if " -> FLOCK " in line}


@pytest.mark.slow
def test_concurrent_builds_of_one_cache_take_turns(small, tmp_path):
  """Builds of one cache wait while another holds it (here: this test, holding the lock);
  two processes building the same new cache at once (two runs of one data config) both
  succeed and leave the files of a single build."""
  root, spec = small
  sources = ["text.en", "text.fr", "code_switched", "parallel"]
  logs = [tmp_path / f"builder{i}.txt" for i in range(2)]
  with open(tmp_path / "cache.lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    builders = [subprocess.Popen([sys.executable, "-c", BUILDER, json.dumps(spec.__dict__),
                                  str(tmp_path / "cache"), ",".join(sources)], cwd=ROOT,
                                 stderr=open(log, "w")) for log in logs]
    deadline = time.monotonic() + 300
    while not {b.pid for b in builders} <= _waiting_pids():
      assert all(b.poll() is None for b in builders), "a build did not wait for the lock"
      assert time.monotonic() < deadline
      time.sleep(0.5)
    assert not (tmp_path / "cache").exists()
  for builder, log in zip(builders, logs):
    assert builder.wait(timeout=300) == 0, log.read_text()[-3000:]
  single = {k: v for k, v in tree(root / "cache").items() if Path(k).parent.name in sources}
  assert {k: v for k, v in tree(tmp_path / "cache").items() if k != "cache.json"} == single
  assert set(cache.read_meta(tmp_path / "cache")["sources"]) == set(sources)


def test_cache_refuses_another_vocabulary_or_length(small):
  root, spec = small
  with pytest.raises(cache.CacheMismatchError, match="seq_length=64.*data.seq_length=128"):
    cache.TokenCache(root / "cache", spec.vocab, 128)
  with pytest.raises(cache.CacheMismatchError, match="vocabulary"):
    cache.TokenCache(root / "cache", default_vocab_path(), 64)
  with pytest.raises(cache.CacheMismatchError):
    data_lib.prepare_input(_data(root, vocab=default_vocab_path()))


def _steps(spec, hosts: int, steps: int, state=None, workers: int = 0):
  """`steps` global batches from `hosts` processes' iterators, and the global state after."""
  its = [Batches(spec, h, hosts, state, workers=workers) for h in range(hosts)]
  out = [{k: np.concatenate([b[k] for b in parts]) for k in parts[0]}
         for parts in ([next(it) for it in its] for _ in range(steps))]
  state = np.concatenate([it.state() for it in its])
  for it in its:
    it.close()
  return out, state


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("before,after", [(1, 1), (2, 1), (1, 2), (4, 2)])
def test_resume_continues_the_global_order_on_any_host_count(small, before, after):
  spec = data_lib.prepare_input(_data(small[0]), progress=False)
  full, _ = _steps(spec, 1, 14)
  first, state = _steps(spec, before, 6)
  assert state.shape == (4, 2) and state[:, 0].max() >= 1  # blocks were crossed
  rest, _ = _steps(spec, after, 8, state)
  _same(first + rest, full)


def test_worker_processes_give_the_same_batches(small):
  spec = data_lib.prepare_input(_data(small[0]), progress=False)
  _same(_steps(spec, 1, 10, workers=2)[0], _steps(spec, 1, 10)[0])


def test_mixture_rates_and_language_temperature(small):
  root = small[0]
  counts = {"text.en": 900, "text.fr": 100, "code_switched": 10, "parallel": 10, "reasoning": 5}
  w = mixtures.source_weights("kmlm_mix", mixtures.MixtureRates(2, 1, 1), counts, LANGS, 1.0)
  assert w["text.en"] == pytest.approx(0.5 * 0.9) and w["reasoning"] == pytest.approx(0.25)
  flat = mixtures.source_weights("cc100", mixtures.MixtureRates(), counts, LANGS, 1 / 0.3)
  assert flat["text.en"] / flat["text.fr"] == pytest.approx(9 ** 0.3)
  # The batches follow the rates: count examples per loss bucket over many blocks.
  spec = data_lib.prepare_input(_data(root, rate_mlm=1, rate_knowledge=2, rate_reasoning=1,
                                      block_examples=400), progress=False)
  seen = np.zeros(4)
  for shard in range(4):
    rows, _ = __import__("kmlm_jax.data.input", fromlist=["x"]).make_block(spec, shard, 0)
    for r in range(len(rows["input_ids"])):
      streams = rows["mlm_terms"][r][rows["mlm_weights"][r] > 0]
      segs = rows["segment_ids"][r][rows["mlm_positions"][r][rows["mlm_weights"][r] > 0]]
      for s in np.unique(segs):
        seen[int(streams[segs == s][0])] += 1
  frac = seen / seen.sum()
  # Examples with no loss token are invisible here; the knowledge share dominates.
  assert frac[masking.RULE_KNOWLEDGE] > frac[masking.RULE_TEXT] > 0


@pytest.mark.slow
def test_packing_efficiency_per_stream_on_the_sample():
  """The embedded sample at T=128, P=20: >= 93% real tokens in every stream."""
  for task in ("cc100", "kmlm_knowledge_cs", "kmlm_knowledge_parallel", "kmlm_reasoning",
               "prixlm_triples"):
    if task == "prixlm_triples":
      continue  # needs a Prix-LM vocabulary: covered by bench/data_pipeline.py
    spec = data_lib.prepare_input(DataConfig(mixture=task, max_predictions=20, batch_size=64),
                                  progress=False)
    it = Batches(spec)
    for _ in range(40):
      next(it)
    eff = packing.efficiency(it.stats, 128)
    print(f"{task}: {eff:.1%} ({it.stats})")
    assert eff >= 0.93, (task, eff)


def _per_example_nll(model, rows) -> dict:
  """{tokens of an example: summed NLL of its predictions} over packed rows."""
  batch = {k: jnp.asarray(v) for k, v in rows.items()}
  out = model(batch["input_ids"], segment_ids=batch["segment_ids"])
  logits = model.mlm_logits(out.hidden, batch["mlm_positions"])
  logp = jax.nn.log_softmax(logits, -1)
  nll = -jnp.take_along_axis(logp, batch["mlm_targets"][..., None], -1)[..., 0]
  nll = np.asarray(nll * batch["mlm_weights"])
  seg = np.take_along_axis(rows["segment_ids"], rows["mlm_positions"], 1)
  out = {}
  for r in range(len(nll)):
    for s in range(1, int(rows["segment_ids"][r].max()) + 1):
      tokens = tuple(rows["input_ids"][r][rows["segment_ids"][r] == s].tolist())
      out[tokens] = float(nll[r][(seg[r] == s) & (rows["mlm_weights"][r] > 0)].sum())
  return out


@pytest.mark.slow
def test_packed_equals_unpacked_per_example_loss():
  rng = np.random.default_rng(0)
  lengths = rng.integers(6, 40, 40)
  n = int(lengths.sum())
  ids = rng.integers(4, 1000, n).astype(np.int32)
  loss = rng.random(n) < 0.25
  loss[np.cumsum(lengths) - lengths + 1] = True
  streams = (np.arange(40) % 3).astype(np.int32)
  config = preset("tiny", vocab_size=1000, max_position_embeddings=130, dropout_rate=0.0)
  model = Encoder(config, rngs=nnx.Rngs(0))
  args = (ids, ids, loss, np.ones(n, bool), lengths, streams)
  packed, _ = packing.pack_block(*args, packing.PackSpec(128, 32, 1))
  alone, _ = packing.pack_block(*args, packing.PackSpec(128, 32, 1, pack=False))
  assert len(packed["input_ids"]) < len(alone["input_ids"]) == 40
  a, b = _per_example_nll(model, packed), _per_example_nll(model, alone)
  assert len(a) == len(b) == 40 and set(a) == set(b)  # every example once, identified by tokens
  for tokens in b:
    assert abs(a[tokens] - b[tokens]) <= 1e-5 * max(1.0, abs(b[tokens])), (a[tokens], b[tokens])


# ---------------------------------------------------------------- bad input


def test_text_errors_name_file_and_line_or_are_counted(tmp_path):
  (tmp_path / "fr.txt").write_bytes("Bonjour le monde.\n".encode() + b"caf\xe9 noir\n\n")
  spec = cache.CacheSpec(vocab=default_vocab_path(), seq_length=64,
                         text_pattern=str(tmp_path / "{lang}.txt"), languages=("fr",))
  with pytest.raises(CorpusError, match=r"fr.txt:2: not valid UTF-8"):
    cache.build(tmp_path / "c1", spec, ["text.fr"], progress=False)
  assert not (tmp_path / "c1" / "text.fr").exists()
  skip = cache.CacheSpec(**{**spec.__dict__, "skip_bad_lines": True})
  meta = cache.build(tmp_path / "c2", skip, ["text.fr"], progress=False)
  assert meta["sources"]["text.fr"]["skipped"] == {"empty_line": 1, "non_utf8_line": 1}
  assert meta["sources"]["text.fr"]["examples"] == 1
  with pytest.raises(CorpusError, match=r"data.text_pattern: .* matches no file .* de"):
    cache.build(tmp_path / "c3", spec, ["text.de"], progress=False)


@pytest.mark.slow
def test_samples_longer_than_the_sequence_are_counted(small, tmp_path):
  root, spec = small
  short = cache.CacheSpec(**{**spec.__dict__, "seq_length": 24})
  meta = cache.build(tmp_path / "short", short, ["reasoning"], progress=False)
  assert meta["sources"]["reasoning"]["skipped"]["longer_than_seq_length"] > 0
  assert meta["sources"]["reasoning"]["examples"] + meta["sources"]["reasoning"]["skipped"][
      "longer_than_seq_length"] == meta["sources"]["reasoning"]["lines"]


def test_unknown_mixture_and_unsplittable_shards(small):
  with pytest.raises(CorpusError, match="unknown mixture 'kmlm_mixx'"):
    data_lib.prepare_input(_data(small[0], mixture="kmlm_mixx"))
  spec = data_lib.prepare_input(_data(small[0]), progress=False)
  with pytest.raises(CorpusError, match="input_shards=4 is not divisible by the 3 host shares"):
    Batches(spec, 0, 3)
  with pytest.raises(CorpusError, match="resume with the same value"):
    Batches(spec, 0, 1, np.zeros((8, 2)))


# ---------------------------------------------------------------- seqio


@pytest.mark.slow
def test_importing_tasks_writes_nothing(tmp_path):
  code = "import seqio, tasks; print(len(seqio.MixtureRegistry.get('kmlm_mix').tasks))"
  env = {**os.environ, "HOME": str(tmp_path)}
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                        env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert int(proc.stdout.split()[-1]) == 13  # 10 languages + 3 knowledge tasks
  assert not (tmp_path / ".cache" / "kmlm_jax").exists()


def test_seqio_tasks_read_the_token_cache(small):
  import seqio
  import tasks
  root, _ = small
  try:
    tasks.register(_data(root))
    ds = seqio.get_mixture_or_task("kmlm_knowledge_cs").get_dataset(
        None, split="train", shuffle=False)
    first = next(ds.as_numpy_iterator())
    src = cache.TokenCache(root / "cache").source("code_switched").gather(np.asarray([0]))
    np.testing.assert_array_equal(first["input_ids"], src["tokens"])
    mix = seqio.get_mixture_or_task("kmlm_mix")
    rates = {t.name: mix.get_rate(t) for t in mix.tasks}
    assert sum(rates.values()) == pytest.approx(1.0)
  finally:
    tasks.register()


def test_cli_refuses_a_cache_of_another_vocabulary(small, tmp_path):
  root, _ = small
  config = tmp_path / "cfg.py"
  config.write_text(f"""
from kmlm_jax.config import *
def get_config():
  return ExperimentConfig("c", preset("tiny"), DataConfig(mixture="kmlm_mix",
      corpus_dir="{root / 'kg'}", cache_dir="{root / 'cache'}", seq_length=64))
""")
  proc = subprocess.run([sys.executable, "-m", "kmlm_jax.cli", "data", "cache", "--config",
                         str(config)], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("kmlm-jax data: error:") and "built with the vocabulary" in last
  assert "Traceback" not in proc.stderr
