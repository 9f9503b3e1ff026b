"""Mixed precision: run a layer's products in a lower ``compute_dtype`` while its params stay float32.

A layer built with ``compute_dtype=jnp.bfloat16`` casts its input and params to bfloat16 at the start
of ``apply``; its op then runs (and its handwritten rule computes the gradients) in bfloat16, and the
cast's own transpose brings the params' gradients back to float32. The layer's output stays in
``compute_dtype``, so the next layer with the same policy takes it as it is; end a model with
``Float32()`` so that the loss and the softmax run in float32 (``tinyfn.models`` does this for you).
"""

from __future__ import annotations

import jax.numpy as jnp

from tinyfn.layers.base import Layer, parameterless

__all__ = ["check_compute_dtype", "cast", "Float32"]


def check_compute_dtype(op: str, compute_dtype):
    """``None`` or a floating dtype (``jnp.bfloat16``, ``jnp.float16``, ``jnp.float32``, ...)."""
    if compute_dtype is None:
        return None
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError:
        raise TypeError(
            f"{op}: compute_dtype must be a floating dtype such as jnp.bfloat16 or None, got {compute_dtype!r}"
        ) from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{op}: compute_dtype must be a floating dtype such as jnp.bfloat16 or None, got {dtype}")
    return dtype


def cast(compute_dtype, *arrays):
    """The arrays in ``compute_dtype`` (``None``s kept); unchanged when ``compute_dtype`` is ``None``."""
    if compute_dtype is None:
        return arrays
    return tuple(None if a is None else jnp.asarray(a).astype(compute_dtype) for a in arrays)


def Float32() -> Layer:
    """Casts its input to float32 (no params): the last layer of a model whose layers compute in bf16."""
    return parameterless("Float32", lambda x: jnp.asarray(x).astype(jnp.float32))
