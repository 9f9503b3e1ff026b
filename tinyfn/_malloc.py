"""Keep glibc from returning XLA's step temporaries to the OS on every step.

On Linux, glibc maps blocks above its mmap threshold (at most 32 MiB) with
``mmap`` and unmaps them on ``free``, and trims the top of the heap once more
than the trim threshold is free there. A jitted training step allocates and
frees the same large temporaries every step, so every step faults them back in,
a page fault per 4 KiB: measured here, 22,000 faults and half the step time of
the 32/64-channel CNN at batch 128 (see ``benchmarks/README.md``).

``keep_freed_memory()`` raises both thresholds and keeps one arena, which is
what ``MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=1073741824
MALLOC_ARENA_MAX=1`` in the environment would do. Freed memory then stays in the
process for reuse (its resident size stops shrinking between steps). It only
works before XLA's runtime has started its threads (measured: called after the
first computation it leaves the faults as they were), so ``import tinyfn``
calls it, unless ``TINYFN_MALLOPT=0`` is set; it changes nothing where glibc is
absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory", "tune_at_import", "tuned"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def keep_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Tune glibc's ``malloc`` for a training process (calling it again is harmless); ``True`` if it took."""
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # musl and others: no mallopt
            mallopt = None
        if mallopt is not None:
            settings = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold))
            ok = all(mallopt(option, value) == 1 for option, value in settings)
    return ok


def _skipped() -> bool:
    import os

    return os.environ.get("TINYFN_MALLOPT", "1").strip().lower() in ("0", "false", "no", "off")


def tune_at_import() -> bool | None:
    """``keep_freed_memory()`` unless the environment says ``TINYFN_MALLOPT=0``; ``None`` when skipped."""
    return None if _skipped() else keep_freed_memory()


def tuned() -> bool:
    """Whether ``import tinyfn`` will have tuned (or tuned) the allocator in this process: glibc, not opted out."""
    return sys.platform.startswith("linux") and not _skipped() and ctypes.util.find_library("c") is not None
