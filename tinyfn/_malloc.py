"""``tune_allocator()``: keep glibc from returning XLA's step temporaries to the OS on every step.

On Linux, glibc maps blocks above its mmap threshold (at most 32 MiB) with
``mmap`` and unmaps them on ``free``, and trims the top of the heap once more
than the trim threshold is free there. A jitted training step allocates and
frees the same large temporaries every step, so every step faults them back in,
a page fault per 4 KiB: measured here, 22,000 faults and half the step time of
the 32/64-channel CNN at batch 128 (see ``benchmarks/README.md``).

``tune_allocator()`` raises both thresholds and keeps one malloc arena, which
is what ``MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=1073741824
MALLOC_ARENA_MAX=1`` in the environment would do. The cost is process-wide:
every thread of the process shares one arena, and freed memory stays in the
process for reuse (its resident size stops shrinking). So tinyfn never calls it
on import; the ``tinyfn`` command line calls it first thing, and a training
script may too. It only works before XLA's runtime has started its threads
(measured: called after the first computation it leaves the faults as they
were); it changes nothing where glibc is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_allocator", "allocator_tuned", "tuned"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_state = {"mmap_threshold": None}  # set by the last tune_allocator() that took effect


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return None


def tune_allocator(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Tune glibc's ``malloc`` for a training process; ``True`` if it took (calling it again is harmless).

    Pays when a jitted step's temporaries are large (the 32/64-channel CNN at
    batch 128: about 2x fewer ms per step, ``benchmarks/README.md``); LeNet-5's
    stay under glibc's own threshold and gain little. Costs: one malloc arena
    for every thread of the process, and freed memory kept rather than returned
    to the OS. Call it before the first JAX computation (XLA's threads pick
    their arenas when they start). ``TINYFN_MALLOPT=0`` in the environment
    turns the call into a no-op that returns ``False``. Once it has taken
    effect, the ``im2col`` ops traced afterwards build ``X*`` of up to 64 MiB at
    once instead of 32 (``tinyfn.layers.kernels.default_chunk_bytes``).
    """
    return False if _opted_out() else _apply(mmap_threshold, trim_threshold)


def _apply(mmap_threshold: int, trim_threshold: int) -> bool:
    mallopt = _mallopt()
    if mallopt is None:
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, int(mmap_threshold)), (_M_TRIM_THRESHOLD, int(trim_threshold)))
    ok = all(mallopt(option, value) == 1 for option, value in settings)
    if ok:
        _state["mmap_threshold"] = int(mmap_threshold)
    return ok


def allocator_tuned() -> bool:
    """Whether ``tune_allocator()`` has taken effect in this process."""
    return _state["mmap_threshold"] is not None


def mmap_threshold() -> int | None:
    """The mmap threshold the last effective ``tune_allocator()`` set, in bytes (``None``: glibc's own)."""
    return _state["mmap_threshold"]


def _opted_out() -> bool:
    return os.environ.get("TINYFN_MALLOPT", "1").strip().lower() in ("0", "false", "no", "off")


def tuned() -> bool:
    """Whether ``tune_allocator()`` can take effect in this process: glibc present, not opted out."""
    return sys.platform.startswith("linux") and not _opted_out() and ctypes.util.find_library("c") is not None
