"""Elementwise and normalising activations: ``relu``, ``softmax``, ``log_softmax``."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from tinyfn import _checks
from tinyfn._logsumexp import log_softmax as _plain_log_softmax
from tinyfn.layers.base import Layer, parameterless

__all__ = ["relu", "softmax", "log_softmax", "ReLU", "Softmax", "LogSoftmax"]


def _plain_relu(x):
    return jnp.maximum(x, jnp.zeros((), x.dtype))


@jax.custom_vjp
def _relu(x):
    return _plain_relu(x)


def _relu_fwd(x):  # the plain forward (not _relu itself), so that forward mode can run through this rule
    y = _plain_relu(x)
    return y, y


def _relu_bwd(y, g):
    # Diagonal Jacobian diag([x > 0]): dx = g · [x > 0] (0 at the kink x = 0, as in PyTorch).
    return (jnp.where(y > 0, g, jnp.zeros((), g.dtype)),)


_relu.defvjp(_relu_fwd, _relu_bwd)


def relu(x):
    """``max(x, 0)`` elementwise. Backward (handwritten): ``g · [x > 0]``."""
    return _relu(_checks.float_array("x", x, op="relu"))


def _axis_layer(name, fn, axis):
    axis = _checks.layer_axis("axis", axis, op=name)
    shape_fn = partial(_checks.axis_of_shape, "axis", axis, op=name)
    return parameterless(name, partial(fn, axis=axis), shape_fn, axis=axis)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax(x, axis):
    return jnp.exp(_plain_log_softmax(x, axis))


def _softmax_fwd(x, axis):
    y = jnp.exp(_plain_log_softmax(x, axis))
    return y, y


def _softmax_bwd(axis, y, g):
    # Jacobian diag(y) - y yᵀ (symmetric): dx = y · (g - <g, y>)
    return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _log_softmax(x, axis):
    return _plain_log_softmax(x, axis)


def _log_softmax_fwd(x, axis):
    y = _plain_log_softmax(x, axis)
    return y, y


def _log_softmax_bwd(axis, y, g):
    # Jacobian I - 1 softmax(x)ᵀ: dx = g - softmax(x) · Σ g
    return (g - jnp.exp(y) * g.sum(axis=axis, keepdims=True),)


_log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)


def softmax(x, axis=-1):
    """``exp(x_i) / Σ_j exp(x_j)`` along ``axis``, computed stably (max subtracted).

    Backward (handwritten): ``dx = y · (g - Σ g·y)``.
    """
    x = _checks.float_array("x", x, op="softmax")
    return _softmax(x, _checks.axis("axis", axis, x, op="softmax"))


def log_softmax(x, axis=-1):
    """``x_i - log Σ_j exp(x_j)`` along ``axis``, computed stably (log-sum-exp with the max subtracted).

    Backward (handwritten): ``dx = g - softmax(x) · Σ g``.
    """
    x = _checks.float_array("x", x, op="log_softmax")
    return _log_softmax(x, _checks.axis("axis", axis, x, op="log_softmax"))


def ReLU() -> Layer:
    """``relu`` as a layer (no params)."""
    return parameterless("ReLU", relu)


def Softmax(axis: int = -1) -> Layer:
    """``softmax`` along ``axis`` as a layer (no params)."""
    return _axis_layer("Softmax", softmax, axis)


def LogSoftmax(axis: int = -1) -> Layer:
    """``log_softmax`` along ``axis`` as a layer (no params)."""
    return _axis_layer("LogSoftmax", log_softmax, axis)
