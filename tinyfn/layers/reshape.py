"""Flattening: ``(N, d1, d2, ...) -> (N, d1 * d2 * ...)``."""

from __future__ import annotations

import math

import jax.numpy as jnp

from tinyfn.layers.base import Layer, parameterless

__all__ = ["flatten", "Flatten"]


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
