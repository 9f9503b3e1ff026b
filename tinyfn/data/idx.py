"""The IDX file format of MNIST and Fashion-MNIST: read (``.gz`` or raw) with full validation, and write.

Layout: two zero bytes, a type byte, the number of dimensions ``d``; then
``d`` big-endian uint32 sizes; then the values, big-endian, row-major.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "write_idx", "IDXError"]

_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}


class IDXError(ValueError):
    """A file that is not a well-formed IDX file."""


def _raw_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"\x1f\x8b":  # gzip magic
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (EOFError, OSError, zlib.error) as exc:
            raise IDXError(f"{path}: the gzip stream is truncated or corrupted ({exc})") from None
    return path.read_bytes()


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into a native-endian numpy array.

    Raises ``IDXError`` (a ``ValueError``) naming the file and the problem for a
    wrong magic number, an unknown type, a zero dimension, or a length that
    does not match the header; ``FileNotFoundError`` if it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    data = _raw_bytes(path)
    if len(data) < 4:
        raise IDXError(f"{path}: {len(data)} bytes is too short for an IDX header (4-byte magic number)")
    magic = int.from_bytes(data[:4], "big")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in _TYPES or ndim == 0:
        raise IDXError(
            f"{path}: bad magic number 0x{magic:08X}; expected 0x0000TTDD with type TT in "
            f"{{{', '.join(f'0x{c:02X}' for c in _TYPES)}}} and DD >= 1 dimensions"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: truncated header: {ndim} dimensions need {header} bytes, the file has {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if 0 in dims:
        raise IDXError(f"{path}: a dimension is zero in {dims}")
    dtype = _TYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise IDXError(
            f"{path}: file is {what}: dimensions {dims} of {dtype.name} need {expected} bytes, found {len(data)}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array, *, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX (gzip if ``compress`` or the name ends in ``.gz``), atomically."""
    path = Path(path)
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("=")
    if dtype not in _CODES:
        raise TypeError(
            f"write_idx: dtype {array.dtype} has no IDX type; expected one of uint8, int8, int16, int32, float32, "
            "float64"
        )
    payload = bytes([0, 0, _CODES[dtype], array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload += array.astype(_TYPES[_CODES[dtype]]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
