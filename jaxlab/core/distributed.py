"""Device meshes, batch sharding and multi-host start-up.

jaxlab shards data over a one-dimensional `Mesh` whose axis is called "data":
every batch is split along its leading dimension across the devices, and
parameters are replicated. The same code runs on one device, on several local
devices, and on several hosts after `initialize_distributed()`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# Variables whose presence means that this process is one of several workers.
# The cluster-specific ones are those that `jax.distributed.initialize()` reads
# when it auto-detects a Slurm, Open MPI or Cloud TPU cluster (jax 0.10).
_COORDINATOR_VARIABLE = "JAX_COORDINATOR_ADDRESS"
_PROCESS_COUNT_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
_TPU_HOSTS_VARIABLE = "TPU_WORKER_HOSTNAMES"


def _multi_host_reason() -> str | None:
    """Return which environment variable marks a multi-host job, or None."""
    if os.environ.get(_COORDINATOR_VARIABLE):
        return f"{_COORDINATOR_VARIABLE}={os.environ[_COORDINATOR_VARIABLE]}"
    for name in _PROCESS_COUNT_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return f"{name}={value}"
    hosts = [h for h in os.environ.get(_TPU_HOSTS_VARIABLE, "").split(",") if h]
    if len(hosts) > 1:
        return f"{_TPU_HOSTS_VARIABLE} lists {len(hosts)} hosts"
    return None


def initialize_distributed() -> bool:
    """Start the JAX multi-host runtime when the environment describes several processes.

    Call it once at program start, before any other JAX call. It calls
    `jax.distributed.initialize()` only when `JAX_COORDINATOR_ADDRESS` is set,
    `SLURM_NTASKS` or `OMPI_COMM_WORLD_SIZE` is greater than 1, or
    `TPU_WORKER_HOSTNAMES` lists several hosts. JAX then reads the coordinator
    address, process count and process id from the same environment
    (`JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` go with `JAX_COORDINATOR_ADDRESS`).

    Returns:
        True if the distributed runtime was initialized, False for a single-host run.
    """
    reason = _multi_host_reason()
    if reason is None:
        logging.info("Single-host run: no multi-host environment variables, "
                     "skipping jax.distributed.initialize().")
        return False

    kwargs: dict[str, Any] = {}
    if os.environ.get(_COORDINATOR_VARIABLE):
        for name, key in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
            if name in os.environ:
                kwargs[key] = int(os.environ[name])
    logging.info("Multi-host run (%s): calling jax.distributed.initialize(%s).", reason, kwargs)
    jax.distributed.initialize(**kwargs)
    logging.info("Process %d of %d, %d local and %d global devices.", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def make_mesh(axis_name: str = DATA_AXIS, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Build a one-dimensional mesh over `devices` (default: all devices of every host)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis_name,))


def _data_axis(mesh: Mesh) -> str:
    """Return the mesh axis that batches are split over: 'data', or the only axis."""
    if DATA_AXIS in mesh.axis_names:
        return DATA_AXIS
    if len(mesh.axis_names) == 1:
        return mesh.axis_names[0]
    raise ValueError(f"Mesh axes {mesh.axis_names} contain no '{DATA_AXIS}' axis to shard batches "
                     f"over. Name one axis '{DATA_AXIS}' in make_mesh or jax.make_mesh.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Return the sharding that splits the leading (batch) dimension over the data axis."""
    return NamedSharding(mesh, PartitionSpec(_data_axis(mesh)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Return the sharding that puts a full copy of an array on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def round_up_to_devices(n: int, mesh: Mesh) -> int:
    """Return the smallest multiple of the data-axis size that is >= n (e.g. a padded batch size)."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}.")
    size = mesh.shape[_data_axis(mesh)]
    return math.ceil(n / size) * size


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of a batch on `mesh`, split along its leading dimension.

    Args:
        tree: a pytree of arrays with a leading batch dimension. On several hosts
            each process passes its own slice of the global batch.
        mesh: the device mesh, e.g. from `make_mesh()`.

    Returns:
        The tree with `jax.Array` leaves sharded by `batch_sharding(mesh)`.

    Raises:
        ValueError: if a leaf is a scalar or its batch size is not divisible by
            the number of devices on the data axis (local devices per host).
    """
    sharding = batch_sharding(mesh)
    axis = _data_axis(mesh)
    devices_per_process = mesh.shape[axis] // jax.process_count()
    leaves_with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in leaves_with_paths:
        name = jax.tree_util.keystr(path, simple=True, separator="/") or "<root>"
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(f"Leaf '{name}' is a scalar and has no batch dimension to shard. Put it "
                             "on the mesh with replicated_sharding(mesh) instead.")
        if shape[0] % devices_per_process:
            padded = math.ceil(shape[0] / devices_per_process) * devices_per_process
            raise ValueError(
                f"Batch size {shape[0]} of leaf '{name}' is not divisible by the "
                f"{devices_per_process} devices on mesh axis '{axis}'. Pad the batch to {padded}, "
                f"use a batch size that is a multiple of {devices_per_process}, or drop the last "
                "partial batch."
            )
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    # NOTE: this multi-host branch is not exercised by the tests, which run in one process.
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
