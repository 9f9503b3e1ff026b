"""Reading a safetensors file's header and tensors, every field checked before the body is trusted."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np


class CheckpointError(ValueError):
    """A file that is not a readable tinyfn checkpoint, or one that does not match what was expected."""


MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


# safetensors' dtype names; numpy has no bfloat16 or float8, JAX's (ml_dtypes') do
_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": jnp.bfloat16,
    "F8_E4M3": jnp.float8_e4m3fn,
    "F8_E5M2": jnp.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _header(f, size: int) -> tuple[dict, int]:
    """A safetensors header and its length, checked against the file's ``size``."""
    if size < 8:
        raise ValueError(f"{size} bytes is too short for a safetensors header")
    n = int.from_bytes(f.read(8), "little")
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"header claims {n:,} bytes, over the {MAX_HEADER_BYTES:,}-byte limit")
    if n > size - 8:
        raise ValueError(f"header of {n:,} bytes does not fit in a {size:,}-byte file")
    header = json.loads(f.read(n).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    ends = [e.get("data_offsets", [0, 0])[1] for k, e in header.items() if k != "__metadata__" and isinstance(e, dict)]
    body = size - 8 - n
    if ends and max(ends) != body:
        raise ValueError(f"the header's tensors end at byte {max(ends):,} of the body, but the body has {body:,} bytes")
    return header, n


def _tensor(path, name: str, entry: dict, body: bytes) -> np.ndarray:
    """One tensor of the body; a dtype this reader cannot hold is a ``CheckpointError`` naming tensor and dtype."""
    dtype = entry["dtype"]
    if dtype not in _DTYPES:
        raise CheckpointError(
            f"{path}: tensor '{name}' has dtype {dtype!r}, which this tinyfn cannot read ({', '.join(_DTYPES)})"
        )
    dtype = np.dtype(_DTYPES[dtype]).newbyteorder("<")
    shape = tuple(int(d) for d in entry["shape"])
    start, end = (int(o) for o in entry["data_offsets"])
    if any(d < 0 for d in shape) or not 0 <= start <= end or end - start != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"tensor '{name}': {entry} does not describe {end - start} bytes of {dtype}")
    return np.frombuffer(body, dtype, count=int(np.prod(shape)), offset=start).reshape(shape)
