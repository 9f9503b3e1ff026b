"""Atomic file writes that respect the umask: a temporary file beside the target, then a rename."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path, write: Callable[[IO[bytes]], None], *, durable: bool = False) -> Path:
    """Write ``path`` through ``write(file)`` on a temporary file in the same directory, then rename it over ``path``.

    Readers see the old file or the new one, never a part; on any error the
    temporary file is removed and ``path`` is untouched. The file is created
    with mode ``0o666`` filtered by the process's umask, as ``open(path, "wb")``
    would (``tempfile.mkstemp`` would make it ``0o600``). ``durable=True``
    fsyncs the file and its directory before returning.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path):
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
