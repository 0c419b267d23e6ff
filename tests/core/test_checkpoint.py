"""Tests for jaxlab.core.checkpoint, including a SIGKILL during a save."""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxlab.core import distributed
from jaxlab.core.checkpoint import Checkpointer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TMP_MARKER = ".orbax-checkpoint-tmp"


@struct.dataclass
class TrainState:
    params: dict
    opt_count: jax.Array
    key: jax.Array


def _state(scale: float) -> dict:
    return {
        "train": TrainState(
            params={"w": jnp.arange(6.0).reshape(2, 3) * scale, "b": jnp.ones(3, jnp.bfloat16)},
            opt_count=jnp.array(int(scale), jnp.int32),
            key=jax.random.key_data(jax.random.key(int(scale))),
        ),
        "numpy": np.full(4, scale, np.float64),
        "layers": [jnp.zeros(2), jnp.ones(1)],
        "step": int(scale),
        "lr": 0.5 * scale,
    }


def test_roundtrip_preserves_values_and_types(tmp_path):
    state = _state(3.0)
    with Checkpointer(tmp_path / "ckpt") as checkpointer:
        assert checkpointer.latest_step() is None
        assert checkpointer.save(7, state)
        assert checkpointer.latest_step() == 7
        restored = checkpointer.restore(_state(0.0))

    chex.assert_trees_all_equal(restored, state)
    chex.assert_trees_all_equal_dtypes(restored["train"], state["train"])
    assert isinstance(restored["train"], TrainState)
    assert isinstance(restored["numpy"], np.ndarray)
    assert restored["step"] == 3 and isinstance(restored["step"], int)
    assert restored["lr"] == 1.5 and isinstance(restored["lr"], float)


def test_keeps_last_n_and_restores_given_step(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=3) as checkpointer:
        for step in range(5):
            checkpointer.save(step, _state(float(step)))
        assert checkpointer.all_steps() == [2, 3, 4]
        restored = checkpointer.restore(_state(0.0), step=3)
    assert restored["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "3", "4"]

    with Checkpointer(tmp_path) as reopened:
        assert reopened.latest_step() == 4
        with pytest.raises(FileNotFoundError, match=r"step 1 not found.*\[2, 3, 4\]"):
            reopened.restore(_state(0.0), step=1)


def test_existing_step_is_not_overwritten(tmp_path):
    with Checkpointer(tmp_path) as checkpointer:
        assert checkpointer.save(1, {"x": jnp.ones(2)})
        assert not checkpointer.save(1, {"x": jnp.zeros(2)})
        chex.assert_trees_all_equal(checkpointer.restore({"x": jnp.zeros(2)}), {"x": jnp.ones(2)})


def test_restore_casts_to_target_dtype_and_sharding(tmp_path):
    mesh = distributed.make_mesh(devices=jax.devices("cpu"))
    target = {"w": jax.device_put(jnp.zeros((8, 2), jnp.bfloat16), distributed.batch_sharding(mesh))}
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(0, {"w": np.arange(16, dtype=np.float32).reshape(8, 2)})
        restored = checkpointer.restore(target)
    assert restored["w"].dtype == jnp.bfloat16
    assert restored["w"].sharding.is_equivalent_to(target["w"].sharding, ndim=2)
    np.testing.assert_array_equal(np.asarray(restored["w"], np.float32), np.arange(16).reshape(8, 2))

    abstract = {"w": jax.ShapeDtypeStruct((8, 2), jnp.float32, sharding=distributed.replicated_sharding(mesh))}
    with Checkpointer(tmp_path) as checkpointer:
        assert checkpointer.restore(abstract)["w"].dtype == jnp.float32


def test_restore_mismatch_names_paths_and_shapes(tmp_path):
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(2, {"a": {"w": jnp.ones((3, 4))}, "b": jnp.ones(2)})
        with pytest.raises(ValueError) as error:
            checkpointer.restore({"a": {"w": jnp.ones((3, 5))}, "c": jnp.ones(2)})
    message = str(error.value)
    assert "step 2" in message
    assert "in the target but not in the checkpoint: ['c']" in message
    assert "in the checkpoint but not in the target: ['b']" in message
    assert "shape of 'a/w' is (3, 4) in the checkpoint but (3, 5) in the target" in message


def test_restore_without_checkpoint_raises(tmp_path):
    with Checkpointer(tmp_path) as checkpointer:
        with pytest.raises(FileNotFoundError, match="No checkpoint"):
            checkpointer.restore({"x": 0})


def test_rejects_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(tmp_path, max_to_keep=0)
    with Checkpointer(tmp_path) as checkpointer:
        with pytest.raises(ValueError, match="non-negative int, got -1"):
            checkpointer.save(-1, {"x": 1})


def test_orbax_info_logs_are_dropped(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        with Checkpointer(tmp_path) as checkpointer:
            checkpointer.save(0, {"x": jnp.ones(2)})
            checkpointer.restore({"x": jnp.ones(2)})
    assert any("Saved checkpoint step 0" in r.getMessage() for r in caplog.records)
    orbax_records = [r for r in caplog.records if f"{os.sep}orbax{os.sep}" in r.pathname]
    assert orbax_records == []


_SAVE_FOREVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from jaxlab.core.checkpoint import Checkpointer

    checkpointer = Checkpointer(sys.argv[1], max_to_keep=2)
    big = np.zeros(8_000_000, np.float32)  # 32 MB, so that each save takes a while
    for step in range(1000):
        checkpointer.save(step, {"step": step, "big": big + step})
    """
)


def test_kill_during_save_keeps_previous_step(tmp_path):
    directory = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
    child = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, str(directory)], env=env,
                             stderr=subprocess.PIPE)
    try:
        # Wait until step 1 is complete and a later step is being written, then kill.
        deadline = time.monotonic() + 60
        killed_mid_save = False
        while time.monotonic() < deadline and child.poll() is None:
            names = os.listdir(directory) if directory.exists() else []
            if "1" in names and any(TMP_MARKER in name for name in names):
                child.send_signal(signal.SIGKILL)
                killed_mid_save = True
                break
            time.sleep(0.002)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert killed_mid_save, f"the saving process exited early: {child.stderr.read().decode()[-2000:]}"
    assert child.returncode == -signal.SIGKILL
    assert any(TMP_MARKER in name for name in os.listdir(directory)), "the kill did not land mid-save"

    with Checkpointer(directory, max_to_keep=2) as checkpointer:
        latest = checkpointer.latest_step()
        assert latest is not None and latest >= 1
        restored = checkpointer.restore({"step": 0, "big": np.zeros(8_000_000, np.float32)})
        assert restored["step"] == latest
        np.testing.assert_array_equal(restored["big"][[0, -1]], [latest, latest])
        assert not any(TMP_MARKER in name for name in os.listdir(directory))
        assert checkpointer.save(latest + 1, {"step": latest + 1, "big": restored["big"]})
