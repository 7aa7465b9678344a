"""`kmlm-jax kg build --runner beam` on a real distributed runner: Beam's DaskRunner on a
`dask.distributed` cluster of 2 worker processes gives the in-process build's bytes."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.generated_dump import write_dump

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
LANGS = "en,fr,de,ja,zh"


def _tree(directory: Path) -> dict[str, str]:
  """Relative path -> sha256 of every file (manifest.json included)."""
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dask_cluster():
  """A scheduler and 2 worker processes that import this checkout."""
  os.environ["PYTHONPATH"] = str(ROOT)  # the worker processes inherit it
  cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None)
  client = distributed.Client(cluster)
  try:
    client.wait_for_workers(2, timeout=120)
    yield cluster.scheduler_address, client
  finally:
    client.close()
    cluster.close()


def _build(source: list[str], out: Path, beam_options: str | None = None) -> None:
  runner = ["--runner", "beam", f"--beam-options={beam_options}"] if beam_options else []
  result = subprocess.run([sys.executable, "-m", "kmlm_jax.cli", "kg", "build", *source,
                           "--out", str(out), "--num-shards", "3", *runner],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("source", ["sample", "generated"])
def test_dask_build_is_byte_identical(tmp_path, dask_cluster, source):
  address, client = dask_cluster
  assert len(client.scheduler_info()["workers"]) >= 2
  args = ["--sample"] if source == "sample" else [
      "--wikidata-dump", str(write_dump(tmp_path / "dump.json", 20_000)), "--langs", LANGS]
  _build(args, tmp_path / "direct")
  _build(args, tmp_path / "dask", f"--runner=DaskRunner --dask_client_address={address}")
  direct = _tree(tmp_path / "direct")
  assert len(direct) > 20 and _tree(tmp_path / "dask") == direct
