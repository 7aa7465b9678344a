"""train.profile_steps writes a jax.profiler trace of XLA ops; train.jax_cache_dir fills
JAX's persistent compilation cache. One 3-step run of the tiny config checks both."""

import collections
import gzip
import json

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

from kmlm_jax.training import loop
from tests.training.test_loop import _config


@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory):
  """(workdir, cache dir) of 3 steps profiled from step 1 to 3 with a compilation cache."""
  workdir = tmp_path_factory.mktemp("profiled")
  cache = workdir / "jax_cache"
  saved = {k: getattr(jax.config, k) for k in (
      "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
      "jax_persistent_cache_min_entry_size_bytes")}
  try:
    summary = loop.train(_config(steps=3, profile_steps=(1, 4), checkpoint_every=100,
                                 jax_cache_dir=str(cache)), workdir, progress=False)
  finally:  # the rest of the session compiles without the cache
    for k, v in saved.items():
      jax.config.update(k, v)
    compilation_cache.reset_cache()
  assert summary["status"] == "completed"
  return workdir, cache


def _trace_events(workdir) -> list[dict]:
  traces = sorted((workdir / "profile" / "plugins" / "profile").glob("*/*.trace.json.gz"))
  assert len(traces) == 1, traces
  return json.loads(gzip.open(traces[0]).read())["traceEvents"]


@pytest.mark.slow
def test_profile_lists_xla_ops(profiled_run):
  workdir, _ = profiled_run
  assert list((workdir / "profile" / "plugins" / "profile").glob("*/*.xplane.pb"))
  names = collections.Counter(e["name"] for e in _trace_events(workdir) if e.get("ph") == "X")
  fusions = [n for n in names if "fusion" in n and not n.startswith("end:")]
  assert len(fusions) >= 5, names.most_common(20)  # XLA's fused ops ran in the trace
  assert names["PjitFunction(step)"] >= 1  # the train step's dispatch is in it


@pytest.mark.slow
def test_compilation_cache_holds_entries(profiled_run):
  _, cache = profiled_run
  entries = [p.name for p in cache.iterdir()]
  assert any(name.startswith("jit_step-") for name in entries), entries
