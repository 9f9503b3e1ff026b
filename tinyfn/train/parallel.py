"""Data parallelism on JAX's own SPMD machinery (``jax.sharding``, XLA partitioning).

A mesh has one axis, ``"data"``. Each step's batch is split along it
(``NamedSharding(mesh, P("data"))``), params and optimizer state are replicated
(``P()``), and ``jit`` compiles one program in which XLA inserts the all-reduce
of the gradients. Nothing here moves data between devices by hand.

Several hosts: start one process per host, call ``jax.distributed.initialize()``
first, and build the mesh over ``jax.devices()`` (all hosts' devices). Every
process computes the same shuffling order from the same key and loads only its
own rows of each global batch (``local_rows``); ``put_batch`` assembles the
global array with ``jax.make_array_from_process_local_data``. Only process 0
writes files (``is_writer``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "data_mesh",
    "check_batch_size",
    "batch_sharding",
    "replicated",
    "replicate",
    "put_batch",
    "local_rows",
    "is_writer",
]

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A one-axis ``("data",)`` mesh over ``devices``: an int (the first that many of ``jax.devices()``),
    a sequence of devices, or ``None`` for all of them."""
    available = jax.devices()
    if devices is None:
        devices = available
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices must be between 1 and the {len(available)} available {available[0].platform.upper()} "
                f"device(s), got {devices}"
                + (
                    "; for several CPU devices set XLA_FLAGS=--xla_force_host_platform_device_count=N before jax starts"
                    if available[0].platform == "cpu"
                    else ""
                )
            )
        devices = available[:devices]
    elif isinstance(devices, Sequence) and devices and all(isinstance(d, jax.Device) for d in devices):
        devices = list(devices)
    else:
        raise TypeError(f"devices must be an int, a non-empty sequence of jax devices or None, got {devices!r}")
    return Mesh(np.array(devices), (DATA_AXIS,))


def _check_mesh(mesh):
    if not isinstance(mesh, Mesh) or DATA_AXIS not in mesh.axis_names:
        raise TypeError(f"mesh must be a jax.sharding.Mesh with a {DATA_AXIS!r} axis (see data_mesh), got {mesh!r}")
    return mesh.shape[DATA_AXIS]


def check_batch_size(mesh, batch_size: int) -> int:
    """``batch_size`` if it divides evenly over the mesh's ``data`` axis, else a ``ValueError`` saying so."""
    n = _check_mesh(mesh)
    if batch_size % n:
        raise ValueError(
            f"batch_size {batch_size} does not divide over the {n} devices of the mesh; "
            f"expected a multiple of {n} (for example {max(n, batch_size // n * n)})"
        )
    return batch_size


def batch_sharding(mesh) -> NamedSharding:
    """Arrays split along their first (batch) axis over the mesh's ``data`` axis."""
    _check_mesh(mesh)
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh) -> NamedSharding:
    """Arrays copied whole onto every device of the mesh."""
    _check_mesh(mesh)
    return NamedSharding(mesh, P())


def replicate(tree, mesh):
    """Every array leaf of ``tree`` replicated over ``mesh`` (params, optimizer state)."""
    return jax.device_put(tree, replicated(mesh))


def local_rows(global_batch: int) -> slice:
    """The rows of a global batch that this process loads (all of them on one host)."""
    count = jax.process_count()
    if global_batch % count:
        raise ValueError(f"batch_size {global_batch} does not divide over {count} processes")
    per = global_batch // count
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def put_batch(mesh, *arrays):
    """Place this process's rows of a global batch straight onto the mesh, split along ``data``.

    One process: ``jax.device_put`` with the sharding (each device receives its
    own slice). Several: ``jax.make_array_from_process_local_data``, whose global
    first dimension is the local one times ``jax.process_count()``.
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return tuple(jax.device_put(a, sharding) for a in arrays)
    return tuple(
        jax.make_array_from_process_local_data(sharding, a, (a.shape[0] * jax.process_count(), *a.shape[1:]))
        for a in arrays
    )


def is_writer() -> bool:
    """Whether this process writes files (checkpoints, plots): process 0 only."""
    return jax.process_index() == 0
