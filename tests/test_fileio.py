"""fileio: what a failed write leaves."""

import threading
import time

from kmlm_jax import fileio


def test_remove_tree_outlasts_a_late_writer(tmp_path):
  """A writer that re-creates the folder after the first removal (as Orbax's abandoned
  writes do after a failed save) does not leave it behind."""
  target = tmp_path / "tmp"
  (target / "params").mkdir(parents=True)

  def late_writer():
    time.sleep(0.05)
    (target / "params" / "d").mkdir(parents=True, exist_ok=True)
    (target / "params" / "d" / "chunk").write_bytes(b"x")

  writer = threading.Thread(target=late_writer)
  writer.start()
  fileio.remove_tree(target)
  writer.join()
  assert not target.exists()
