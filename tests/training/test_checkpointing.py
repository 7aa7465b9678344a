"""Checkpoint integrity without a train step: checksums, quarantine, refusals, no space.

(A full disk meeting Orbax's write: tests/bad_inputs/test_train_checkpoints.py.)
"""

import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from kmlm_jax.errors import NonFiniteLoss, WriteError
from kmlm_jax.training import checkpointing as ck
from kmlm_jax.training.trainer import TrainState


def _state(n=20_000, fill=None) -> TrainState:
  w = np.random.default_rng(0).standard_normal(n).astype(np.float32)
  if fill is not None:
    w[5] = fill
  return TrainState({"w": jnp.asarray(w), "b": jnp.ones((3, 4))}, {"count": jnp.int32(3)},
                    jnp.int32(0), jnp.zeros(2, jnp.uint32))


def _abstract(state: TrainState) -> TrainState:
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                      state)


def _stored_values(step_dir: Path) -> list:
  with ocp.StandardCheckpointer() as reader:
    return [np.asarray(x) for x in jax.tree.leaves(reader.restore(step_dir / "state"))]


def flip_byte(step_dir: Path) -> Path:
  """Flips one bit in the array data of the checkpoint STEP_DIR such that it still reads,
  with some values changed: the corruption only checksums catch. (Orbax's data files are
  compressed and also hold bytes no array uses, so the bit is chosen by reading back.)"""
  before = _stored_values(step_dir)
  files = sorted((p for p in (step_dir / "state").rglob("*") if p.is_file()
                  and p.parent.name == "d"), key=lambda p: -p.stat().st_size)
  for f in files:
    raw = f.read_bytes()
    for at in (len(raw) // 2, len(raw) // 4, len(raw) * 3 // 4):
      f.write_bytes(raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1:])
      try:
        if any(not np.array_equal(x, y, equal_nan=True)
               for x, y in zip(before, _stored_values(step_dir))):
          return f
      except Exception:  # a flip the reader notices: not the case wanted here
        pass
      f.write_bytes(raw)
  raise AssertionError(f"no bit of {step_dir} changes a value and still reads")


def _saved(directory, steps=(1, 2)) -> ck.Checkpointer:
  c = ck.Checkpointer(directory, async_save=False)
  for step in steps:
    c.save(step, _state(), {"step": step})
  return c


def test_checksum_does_not_depend_on_the_sharding_and_sees_one_changed_value():
  x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
  ref = ck._checksums({"x": jnp.asarray(x)})
  mesh = jax.make_mesh((4, 2), ("a", "b"))
  for spec in (P("a", "b"), P("b", "a"), P(None, ("a", "b")), P()):
    assert ck._checksums({"x": jax.device_put(x, NamedSharding(mesh, spec))}) == ref, spec
  y = x.copy()
  y[3, 7] = np.nextafter(y[3, 7], np.float32(10))
  assert ck._checksums({"x": jnp.asarray(y)}) != ref
  z = x.copy()
  z[[0, 1]] = z[[1, 0]]  # the same values elsewhere
  assert ck._checksums({"x": jnp.asarray(z)}) != ref


def test_flipped_byte_is_quarantined_under_a_fresh_name_and_the_step_before_restored(
    tmp_path, caplog):
  c = _saved(tmp_path / "checkpoints")
  for round_ in range(2):  # the second quarantine of step 2 keeps the first one
    flip_byte(tmp_path / "checkpoints" / "2")
    with caplog.at_level("WARNING", logger="kmlm_jax.training"):
      state, meta = c.restore_latest(_abstract(_state()))
    assert meta == {"step": 1} and "checksum mismatch in params/w" in caplog.text
    np.testing.assert_array_equal(state.params["w"], _state().params["w"])
    assert c.steps() == [1]
    c.save(2, _state(), {"step": 2})
  c.close()
  assert c.quarantined() == ["2", "2.1"]


def test_edited_meta_is_corruption_and_replace_meta_keeps_it_valid(tmp_path):
  c = _saved(tmp_path / "checkpoints")
  step2 = tmp_path / "checkpoints" / "2"
  ck.replace_meta(step2, {"step": 2, "input": 7})
  assert c.restore_latest(_abstract(_state()))[1] == {"step": 2, "input": 7}
  (step2 / "meta" / "metadata").write_text(json.dumps({"step": 2, "input": 8}))
  assert c.restore_latest(_abstract(_state()))[1] == {"step": 1}
  c.close()
  assert c.quarantined() == ["2"]


def test_another_shape_is_a_config_error_and_nothing_moves(tmp_path):
  c = _saved(tmp_path / "checkpoints")
  with pytest.raises(ck.CheckpointMismatch, match=r"params/w has shape \[20000\] float32 "
                                                  r"\(run: \[20001\] float32\)"):
    c.restore_latest(_abstract(_state(20_001)))
  with pytest.raises(ck.CheckpointMismatch, match="meta says no"):
    c.restore_latest(_abstract(_state()), lambda step, meta: (_ for _ in ()).throw(
        ck.CheckpointMismatch("meta says no")))
  assert c.steps() == [1, 2] and not c.quarantined()
  c.close()


def test_nothing_restorable_refuses_to_start_from_step_0(tmp_path):
  c = _saved(tmp_path / "checkpoints")
  for step in (1, 2):
    for f in (tmp_path / "checkpoints" / str(step) / "state").rglob("*"):
      if f.is_file() and f.parent.name == "d":
        f.write_bytes(f.read_bytes()[:10])
  with pytest.raises(ck.NoCheckpointRestored) as e:
    c.restore_latest(_abstract(_state()))
  message = str(e.value)
  assert len(message.splitlines()) == 1
  assert "start from step 0" in message and "step 2 (" in message and "step 1 (" in message
  # Again: checkpoints/ is empty now, checkpoints.corrupt/ holds both.
  with pytest.raises(ck.NoCheckpointRestored, match=r"quarantined in .*checkpoints.corrupt: 1, 2"):
    c.restore_latest(_abstract(_state()))
  c.close()
  assert sorted(p.name for p in (tmp_path / "checkpoints.corrupt").iterdir()) == ["1", "2"]


def test_empty_directory_restores_nothing(tmp_path):
  c = ck.Checkpointer(tmp_path / "checkpoints")
  assert c.restore_latest(_abstract(_state())) is None
  c.close()


def test_non_finite_state_is_never_saved(tmp_path):
  c = _saved(tmp_path / "checkpoints", steps=(1,))
  with pytest.raises(NonFiniteLoss, match=r"step 2: the state to save is not finite \(params/w\)"):
    c.save(2, _state(fill=np.nan), {"step": 2})
  c.close()
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]


def test_too_little_space_is_a_write_error_before_saving(tmp_path, monkeypatch):
  c = _saved(tmp_path / "checkpoints", steps=(1,))
  usage = ck.shutil.disk_usage(tmp_path)
  monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: usage._replace(free=1000))
  with pytest.raises(WriteError, match=r"MiB free, a checkpoint needs about .* \(steps \[1\]\)"):
    c.save(2, _state(), {"step": 2})
  c.close()
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]


def test_orbax_failure_reports_are_dropped_and_others_kept(tmp_path, caplog):
  ck.Checkpointer(tmp_path / "c").close()
  with caplog.at_level("ERROR"):
    logging.getLogger("asyncio").error(
        "Task exception was never retrieved\nfuture: <Task finished coro=<write_fragment() "
        "done, defined at /venv/orbax/checkpoint/serialization.py:188>>")
    logging.getLogger("asyncio").error("another asyncio error")
  assert "never retrieved" not in caplog.text and "another asyncio error" in caplog.text


def test_a_failed_write_without_orbax_frames_is_known_by_its_checkpoint_directory(
    tmp_path, caplog):
  """A bare future's exception (no Orbax frame, no Orbax path) that names a checkpoint
  directory is dropped, as Orbax's writes leave them after a full-disk save."""
  ck.Checkpointer(tmp_path / "c").close()
  error = ValueError(f'RESOURCE_EXHAUSTED: Error writing "step/0" in OCDBT database at '
                     f'local file "{tmp_path / "c"}/2.orbax-checkpoint-tmp/": No space left')
  with caplog.at_level("ERROR"):
    logging.getLogger("asyncio").error(f"Future exception was never retrieved\nfuture: "
                                       f"<Future finished exception={error!r}>",
                                       exc_info=(ValueError, error, None))
    logging.getLogger("asyncio").error("Future exception was never retrieved: elsewhere",
                                       exc_info=(ValueError, ValueError(f"{tmp_path}/d"), None))
  assert "RESOURCE_EXHAUSTED" not in caplog.text and "elsewhere" in caplog.text
