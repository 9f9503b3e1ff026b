"""Elementwise and normalising activations: ``relu``, ``softmax``, ``log_softmax``."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from tinyfn import _checks
from tinyfn.layers.base import Layer, parameterless

__all__ = ["relu", "softmax", "log_softmax", "ReLU", "Softmax", "LogSoftmax"]


@jax.custom_vjp
def _relu(x):
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def _relu_fwd(x):
    y = _relu(x)
    return y, y


def _relu_bwd(y, g):
    # Diagonal Jacobian diag([x > 0]): dx = g · [x > 0] (0 at the kink x = 0, as in PyTorch).
    return (jnp.where(y > 0, g, jnp.zeros((), g.dtype)),)


_relu.defvjp(_relu_fwd, _relu_bwd)


def relu(x):
    """``max(x, 0)`` elementwise. Backward (handwritten): ``g · [x > 0]``."""
    return _relu(_checks.float_array("x", x))


def _check_axis(x, axis):
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be an int in [-{x.ndim}, {x.ndim}) for x of shape {tuple(x.shape)}, got {axis!r}")
    if x.shape[axis] == 0:
        raise ValueError(f"axis {axis} of x (shape {tuple(x.shape)}) is empty: softmax over no values is undefined")
    return axis % x.ndim


def _axis_layer(name, fn, axis):
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{name}: axis must be an int, got {axis!r}")

    def shape_fn(shape):
        if not -len(shape) <= axis < len(shape):
            raise ValueError(f"{name}: axis {axis} is out of range for input_shape {shape}")
        if shape[axis] == 0:
            raise ValueError(f"{name}: axis {axis} of input_shape {shape} is empty")
        return shape

    return parameterless(name, partial(fn, axis=axis), shape_fn, axis=axis)


def _stable_log_softmax(x, axis):
    shifted = x - jax.lax.stop_gradient(x.max(axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.exp(shifted).sum(axis=axis, keepdims=True))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax(x, axis):
    return jnp.exp(_stable_log_softmax(x, axis))


def _softmax_fwd(x, axis):
    y = _softmax(x, axis)
    return y, y


def _softmax_bwd(axis, y, g):
    # Jacobian diag(y) - y yᵀ (symmetric): dx = y · (g - <g, y>)
    return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _log_softmax(x, axis):
    return _stable_log_softmax(x, axis)


def _log_softmax_fwd(x, axis):
    y = _log_softmax(x, axis)
    return y, y


def _log_softmax_bwd(axis, y, g):
    # Jacobian I - 1 softmax(x)ᵀ: dx = g - softmax(x) · Σ g
    return (g - jnp.exp(y) * g.sum(axis=axis, keepdims=True),)


_log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)


def softmax(x, axis=-1):
    """``exp(x_i) / Σ_j exp(x_j)`` along ``axis``, computed stably (max subtracted).

    Backward (handwritten): ``dx = y · (g - Σ g·y)``.
    """
    x = _checks.float_array("x", x)
    return _softmax(x, _check_axis(x, axis))


def log_softmax(x, axis=-1):
    """``x_i - log Σ_j exp(x_j)`` along ``axis``, computed stably (log-sum-exp with the max subtracted).

    Backward (handwritten): ``dx = g - softmax(x) · Σ g``.
    """
    x = _checks.float_array("x", x)
    return _log_softmax(x, _check_axis(x, axis))


def ReLU() -> Layer:
    """``relu`` as a layer (no params)."""
    return parameterless("ReLU", relu)


def Softmax(axis: int = -1) -> Layer:
    """``softmax`` along ``axis`` as a layer (no params)."""
    return _axis_layer("Softmax", softmax, axis)


def LogSoftmax(axis: int = -1) -> Layer:
    """``log_softmax`` along ``axis`` as a layer (no params)."""
    return _axis_layer("LogSoftmax", log_softmax, axis)
