"""Flattening, ``(N, d1, d2, ...) -> (N, d1 * d2 * ...)``, and reshaping per example, ``(N, *in) -> (N, *shape)``."""

from __future__ import annotations

import math
import operator
from functools import partial

import jax
import jax.numpy as jnp

from tinyfn.layers.base import Layer, parameterless

__all__ = ["flatten", "Flatten", "reshape", "Reshape"]


def flatten(x):
    """Keep the batch dimension, merge the rest (row-major, as PyTorch's ``flatten(1)``).

    A reshape moves no numbers, so its gradient is the inverse reshape of ``g``.
    """
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"flatten: x must be an array, got {x!r}")
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"flatten: x must have a batch dimension, got a scalar of shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


def _flat_shape(shape):
    if len(shape) < 1:
        raise ValueError(f"Flatten: input_shape must have a batch entry, got {shape}")
    return (shape[0], math.prod(shape[1:]))


def Flatten() -> Layer:
    """``flatten`` as a layer (no params)."""
    return parameterless("Flatten", flatten, _flat_shape)


# ---- reshape: per example, ``-1`` allowed once --------------------------------------------------


def _dims(op, shape):
    """``shape`` as a tuple of positive ints with at most one ``-1``, or a clear error."""
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{op}: shape must be a tuple of ints (one may be -1), got {shape!r}")
    try:
        if any(isinstance(d, bool) for d in shape):
            raise TypeError
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"{op}: shape must be a tuple of ints (one may be -1), got {shape!r}") from None
    if any(d < -1 or d == 0 for d in dims) or dims.count(-1) > 1:
        raise ValueError(f"{op}: shape must hold positive ints and at most one -1, got {dims}")
    return dims


def _per_example_shape(op, shape, size):
    """``shape`` resolved for examples of ``size`` numbers (the ``-1`` inferred), or a clear error."""
    dims = _dims(op, shape)
    known = math.prod(d for d in dims if d != -1)
    if -1 in dims and size % known:
        raise ValueError(
            f"{op}: cannot reshape {size} numbers per example into {dims}: {size} is not a multiple of {known}"
        )
    if -1 not in dims and known != size:
        raise ValueError(f"{op}: cannot reshape {size} numbers per example into {dims}, which holds {known}")
    return tuple(size // known if d == -1 else d for d in dims)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _reshape(x, shape, in_shape):
    return x.reshape(shape)


def _reshape_fwd(x, shape, in_shape):
    return x.reshape(shape), None


def _reshape_bwd(shape, in_shape, res, g):
    # Law 1: Y = A X with A the identity between the row-major flattenings of X and Y (a reshape moves no
    # numbers)  =>  dL/dX = Aᵀ dL/dY: g read back in X's shape
    return (g.reshape(in_shape),)


_reshape.defvjp(_reshape_fwd, _reshape_bwd)


def reshape(x, shape):
    """``x.reshape(N, *shape)`` (PyTorch's ``x.reshape(x.shape[0], *shape)``): the batch kept, each example reshaped.

    Args:
      x: ``(N, *in)``, any dtype.
      shape: the per-example shape, a tuple of positive ints; one entry may be ``-1`` (inferred).

    Returns:
      ``(N, *shape)``, row-major: the same numbers in the same order.

    Backward (handwritten): ``dx = g.reshape(x.shape)``.
    """
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"reshape: x must be an array, got {x!r}")
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"reshape: x must have a batch dimension, got a scalar of shape {tuple(x.shape)}")
    dims = _per_example_shape("reshape", shape, math.prod(x.shape[1:]))
    return _reshape(x, (x.shape[0], *dims), tuple(x.shape))


def Reshape(shape) -> Layer:
    """``reshape`` as a layer (no params): ``(N, *in) -> (N, *shape)``, like ``torch``'s ``x.reshape(N, *shape)``.

    A malformed ``shape`` is refused here; one that does not fit the input (``4·5`` numbers into ``(3, -1)``) at
    ``init``, naming the input shape.
    """
    shape = _dims("Reshape", shape)

    def shape_fn(input_shape):
        try:
            dims = _per_example_shape("Reshape", shape, math.prod(input_shape[1:]))
        except ValueError as exc:
            raise ValueError(f"{exc} (input_shape {tuple(input_shape)})") from None
        return (input_shape[0], *dims)

    return parameterless("Reshape", partial(reshape, shape=shape), shape_fn, shape=shape)
