"""Which formulation evaluates an op's products: the plan of one call, the ``formulation`` context, path recording.

Without an explicit choice the formulation is chosen at trace time from the
platform of the arrays' devices (``jax.default_backend()`` for abstract values
under ``jit``): ``default_formulation(platform)``, ``"im2col"`` on CPU (falling to
``"direct"`` where the GEMM degenerates) and ``"xla"`` on GPU and TPU.
``formulation(name)`` sets the default for everything traced inside it.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import NamedTuple

import jax

from tinyfn import _checks, _malloc

FORMULATIONS = ("im2col", "xla", "direct")

CHUNK_BYTES = 32 * 2**20
"""The default largest ``X*`` (or ``dX*``) the ``im2col`` formulation builds at once; above it the
batch goes through the GEMMs in chunks (and the backward rebuilds each chunk's ``X*``). 32 MiB is
glibc's largest dynamic mmap threshold, so with glibc's default allocator settings an ``X*`` this
size is reused from the heap instead of being mapped and faulted in on every step. After
``tinyfn.tune_allocator()`` the default is ``TUNED_CHUNK_BYTES`` (``default_chunk_bytes``);
``chunk_bytes=`` on the ops or layers overrides either."""

TUNED_CHUNK_BYTES = 64 * 2**20
"""The default chunk limit once ``tinyfn.tune_allocator()`` has raised glibc's mmap threshold (to 256 MiB;
never above the threshold it set). Measured (``benchmarks/README.md``): LeNet-5's step at batch 512 about
0.77 times the 32 MiB limit's (one ``X*`` of 40 MB instead of two chunks), the wide CNN's and the ResNet's
at batch 512 level or faster; 128 MiB no faster than 64, and 256 MiB let the wide CNN's 115 MB ``X*`` fault
in again on every step."""

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("tinyfn_formulation", default=None)


def _check_name(name, op="formulation"):
    if name not in FORMULATIONS:
        raise ValueError(f"{op}: formulation must be one of {FORMULATIONS} or None, got {name!r}")
    return name


@contextlib.contextmanager
def formulation(name: str | None):
    """Evaluate every op *traced* inside the block with formulation ``name`` (``None``: per backend).

    An explicit ``formulation=`` argument of an op or layer still wins. The choice is made
    while tracing, so a ``jit``-compiled function keeps the formulation of its first call:

    >>> with formulation("xla"):
    ...     step = jax.jit(train_step)
    ...     params = step(params, batch)   # traced here: every conv and pool uses "xla"
    """
    token = _forced.set(None if name is None else _check_name(name))
    try:
        yield
    finally:
        _forced.reset(token)


def default_formulation(platform: str | None = None) -> str:
    """The formulation used when none is asked for: ``"im2col"`` on ``"cpu"``, ``"xla"`` on GPU/TPU.

    ``platform`` defaults to ``jax.default_backend()``.
    """
    platform = jax.default_backend() if platform is None else platform
    return "im2col" if platform == "cpu" else "xla"


def _platform(arrays) -> str:
    for a in arrays:
        if isinstance(a, jax.core.Tracer) or not hasattr(a, "devices"):
            continue
        try:
            return next(iter(a.devices())).platform
        except Exception:  # an array without committed devices
            continue
    return jax.default_backend()


class Plan(NamedTuple):
    """How one op call evaluates its products: ``formulation`` and the ``im2col`` chunk limit in bytes."""

    formulation: str
    chunk_bytes: int


def gemm_degenerates(c: int, k: int, kernel) -> bool:
    """A GEMM over ``X*`` would be a matrix-vector product: one output channel, or one input channel
    under a 1×1 filter."""
    return k == 1 or c * kernel[0] * kernel[1] == 1


def default_chunk_bytes() -> int:
    """The chunk limit of an op called without ``chunk_bytes``, decided when it is traced: ``CHUNK_BYTES``,
    or ``TUNED_CHUNK_BYTES`` (at most the mmap threshold set) once ``tinyfn.tune_allocator()`` has taken
    effect in this process."""
    threshold = _malloc.mmap_threshold()
    return CHUNK_BYTES if threshold is None else max(CHUNK_BYTES, min(TUNED_CHUNK_BYTES, threshold))


def check_options(op: str, name: str | None, chunk_bytes: int | None) -> tuple[str | None, int]:
    """``formulation`` (one of ``FORMULATIONS`` or ``None``) and ``chunk_bytes`` (``None``:
    ``default_chunk_bytes()``), checked."""
    if name is not None:
        _check_name(name, op)
    if chunk_bytes is None:
        return name, default_chunk_bytes()
    return name, _checks.positive_int("chunk_bytes", chunk_bytes, op=op)


def plan(op: str, name: str | None, chunk_bytes: int | None, arrays, w_shape=None) -> Plan:
    """The formulation for one call: ``name`` if given, else ``formulation()``'s, else the backend's
    default (``"im2col"`` there turning ``"direct"`` where the GEMM degenerates, for ``w_shape``)."""
    name, chunk_bytes = check_options(op, name, chunk_bytes)
    if name is not None:
        return Plan(name, chunk_bytes)
    if _forced.get() is not None:
        return Plan(_forced.get(), chunk_bytes)
    chosen = default_formulation(_platform(arrays))
    if chosen == "im2col" and w_shape is not None and gemm_degenerates(w_shape[1], w_shape[0], w_shape[2:]):
        chosen = "direct"
    return Plan(chosen, chunk_bytes)


_recorders: list[list] = []


@contextlib.contextmanager
def record_paths():
    """Collect ``(op, product, path)`` for every product traced inside the block, in order.

    ``path`` is the formulation that evaluated it (``"im2col-chunked"`` when ``X*`` went in
    batch chunks) and, for pooling's routing, the window geometry (``"tiled"``,
    ``"tiled-remainder"``, ``"overlapping"``, ``"gapped"``, ``"padded"``). Tracing only: a
    compiled function that is called again records nothing.
    """
    paths: list = []
    _recorders.append(paths)
    try:
        yield paths
    finally:
        _recorders.remove(paths)


def record(op, product, path):
    """Note that ``op``'s ``product`` was traced by ``path`` (called by the dispatcher only)."""
    for paths in _recorders:
        paths.append((op, product, path))
