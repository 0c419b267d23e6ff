"""Tests for jaxlab.core.distributed on the 8 CPU devices that tests/conftest.py forces."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxlab.core import distributed

CPU_DEVICES = jax.devices("cpu")


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    if len(CPU_DEVICES) != 8:
        pytest.fail(f"Expected 8 CPU devices from tests/conftest.py, found {len(CPU_DEVICES)}; "
                    "was jax imported before the conftest set XLA_FLAGS?")
    return distributed.make_mesh(devices=CPU_DEVICES)


def _init_params(key: jax.Array) -> dict:
    key_hidden, key_out = jax.random.split(key)
    return {
        "hidden": jax.random.normal(key_hidden, (5, 16)) / np.sqrt(5),
        "out": jax.random.normal(key_out, (16, 1)) / 4.0,
    }


def _loss(params: dict, batch: dict) -> jax.Array:
    hidden = jnp.tanh(batch["x"] @ params["hidden"])
    prediction = (hidden @ params["out"])[:, 0]
    return jnp.mean((prediction - batch["y"]) ** 2)


@jax.jit
def _step(params: dict, batch: dict, key: jax.Array) -> tuple[jax.Array, dict, jax.Array]:
    """Return the loss, its gradient and per-example noise drawn from `key`."""
    loss, grads = jax.value_and_grad(_loss)(params, batch)
    noise = jax.random.normal(key, batch["y"].shape) + batch["y"]
    return loss, grads, noise


def _batch(seed: int, size: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(size, 5)).astype(np.float32), "y": rng.normal(size=size).astype(np.float32)}


def test_mesh_covers_all_devices(mesh):
    assert mesh.axis_names == ("data",)
    assert mesh.shape["data"] == 8
    assert distributed.make_mesh().size == jax.device_count()


def test_sharded_step_matches_single_device(mesh):
    key_init, key_noise = jax.random.split(jax.random.key(0))
    params = _init_params(key_init)
    batch = _batch(seed=1, size=32)

    single_device = CPU_DEVICES[0]
    expected = _step(jax.device_put(params, single_device), jax.device_put(batch, single_device),
                     jax.device_put(key_noise, single_device))

    sharded_batch = distributed.shard_batch(batch, mesh)
    replicated = distributed.replicated_sharding(mesh)
    actual = _step(jax.device_put(params, replicated), sharded_batch, jax.device_put(key_noise, replicated))

    assert len(sharded_batch["x"].addressable_shards) == 8
    assert sharded_batch["x"].addressable_shards[0].data.shape == (4, 5)
    assert actual[2].sharding.is_equivalent_to(distributed.batch_sharding(mesh), ndim=1)
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-5)
    for name in params:
        np.testing.assert_allclose(actual[1][name], expected[1][name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(actual[2], expected[2], rtol=1e-6)


def test_shard_batch_rejects_indivisible_batch(mesh):
    with pytest.raises(ValueError, match=r"Batch size 10 of leaf 'x'.*8 devices.*Pad the batch to 16"):
        distributed.shard_batch({"x": np.zeros((10, 3))}, mesh)


def test_shard_batch_rejects_scalar(mesh):
    with pytest.raises(ValueError, match="'step' is a scalar.*replicated_sharding"):
        distributed.shard_batch({"x": np.zeros((8, 3)), "step": 3}, mesh)


def test_round_up_to_devices(mesh):
    assert [distributed.round_up_to_devices(n, mesh) for n in (0, 1, 8, 9, 17)] == [0, 8, 8, 16, 24]
    with pytest.raises(ValueError, match="-1"):
        distributed.round_up_to_devices(-1, mesh)


def test_batch_sharding_on_two_axis_mesh():
    mesh_2d = Mesh(np.asarray(CPU_DEVICES).reshape(4, 2), ("data", "model"))
    assert distributed.round_up_to_devices(5, mesh_2d) == 8
    sharded = distributed.shard_batch(np.arange(8.0), mesh_2d)
    assert {shard.data.shape for shard in sharded.addressable_shards} == {(2,)}

    unnamed = Mesh(np.asarray(CPU_DEVICES).reshape(4, 2), ("batch", "model"))
    with pytest.raises(ValueError, match="no 'data' axis"):
        distributed.batch_sharding(unnamed)


@pytest.mark.parametrize(
    "environment, expected_kwargs",
    [
        ({}, None),
        ({"SLURM_NTASKS": "1"}, None),
        ({"TPU_WORKER_HOSTNAMES": "host0"}, None),
        ({"SLURM_NTASKS": "4"}, {}),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, {}),
        ({"TPU_WORKER_HOSTNAMES": "host0,host1"}, {}),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
         {"num_processes": 2, "process_id": 1}),
    ],
)
def test_initialize_only_for_multi_host(monkeypatch, environment, expected_kwargs):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS",
                 "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))

    initialized = distributed.initialize_distributed()

    assert initialized == (expected_kwargs is not None)
    assert calls == ([] if expected_kwargs is None else [expected_kwargs])
