"""Weight initialisers: ``init(key, shape, fan_in, fan_out, dtype) -> array``.

``fan_in`` is the number of inputs that feed one output unit (``in`` for a
linear layer, ``C * kh * kw`` for a convolution); ``fan_out`` the number of
outputs one input feeds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["he_normal", "he_uniform", "lecun_normal", "glorot_uniform", "zeros", "get"]


def he_normal(key, shape, fan_in, fan_out, dtype=jnp.float32):
    """He/Kaiming normal, ``N(0, 2 / fan_in)``: keeps activations' scale through ReLU layers."""
    del fan_out
    return math.sqrt(2.0 / fan_in) * jax.random.normal(key, shape, dtype)


def he_uniform(key, shape, fan_in, fan_out, dtype=jnp.float32):
    """He/Kaiming uniform, ``U(-a, a)`` with ``a = sqrt(6 / fan_in)`` (same variance as ``he_normal``)."""
    del fan_out
    a = math.sqrt(6.0 / fan_in)
    return jax.random.uniform(key, shape, dtype, -a, a)


def lecun_normal(key, shape, fan_in, fan_out, dtype=jnp.float32):
    """LeCun normal, ``N(0, 1 / fan_in)``: for linear or tanh-like units."""
    del fan_out
    return math.sqrt(1.0 / fan_in) * jax.random.normal(key, shape, dtype)


def glorot_uniform(key, shape, fan_in, fan_out, dtype=jnp.float32):
    """Glorot/Xavier uniform, ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``."""
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -a, a)


def zeros(key, shape, fan_in, fan_out, dtype=jnp.float32):
    del key, fan_in, fan_out
    return jnp.zeros(shape, dtype)


_BY_NAME = {f.__name__: f for f in (he_normal, he_uniform, lecun_normal, glorot_uniform, zeros)}


def get(init):
    """An initialiser from its name or itself if callable."""
    if callable(init):
        return init
    if init in _BY_NAME:
        return _BY_NAME[init]
    raise ValueError(f"w_init must be a callable or one of {sorted(_BY_NAME)}, got {init!r}")
