"""Weight initialisers: ``init(key, shape, fan_in, fan_out, dtype) -> array``.

``fan_in`` is the number of inputs that feed one output unit (``in`` for a
linear layer, ``C * kh * kw`` for a convolution); ``fan_out`` the number of
outputs one input feeds.

The random draws are those of ``jax.random.normal`` / ``jax.random.uniform`` with the
same key and shape, bit for bit. Outside a trace they are taken as the first ``n``
numbers of one draw of a bucketed length (``2**17``, or the next power of two up to
``2**22``): with threefry's partitionable counters (JAX's default) a draw's first ``n``
numbers do not depend on its length, and one compiled draw then serves every layer,
where a draw per shape costs about a second of XLA compilation each (eight of the
ResNet's nine weight shapes).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

__all__ = ["he_normal", "he_uniform", "lecun_normal", "glorot_uniform", "zeros", "get"]


_SMALLEST_DRAW = 2**17
_LARGEST_BUCKETED = 2**22


@functools.partial(jax.jit, static_argnames=("size", "dtype", "uniform"))
def _draw(key, low, high, *, size, dtype, uniform):
    if uniform:
        return jax.random.uniform(key, (size,), dtype, low, high)
    return jax.random.normal(key, (size,), dtype)


def _prefix_consistent(key) -> bool:
    """Whether a draw's first ``n`` numbers are those of a draw of length ``n`` (threefry, partitionable)."""
    if isinstance(key, jax.core.Tracer) or not hasattr(key, "dtype") or not jax.config.jax_threefry_partitionable:
        return False
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    impl = str(jax.random.key_impl(key)) if typed else str(jax.config.jax_default_prng_impl)
    return impl == "threefry2x32" and key.shape == (() if typed else (2,))


def _random(key, shape, dtype, uniform=None):
    """``jax.random.normal(key, shape, dtype)`` or, with ``uniform=(low, high)``, ``jax.random.uniform``, bit for
    bit."""
    shape = tuple(shape)
    n = math.prod(shape)
    if n > _LARGEST_BUCKETED or not _prefix_consistent(key):  # a large draw: its own compile costs little beside it
        return jax.random.uniform(key, shape, dtype, *uniform) if uniform else jax.random.normal(key, shape, dtype)
    size = max(_SMALLEST_DRAW, 1 << max(n - 1, 0).bit_length())
    low, high = uniform or (0.0, 1.0)
    return _draw(key, low, high, size=size, dtype=jnp.dtype(dtype), uniform=uniform is not None)[:n].reshape(shape)


def he_normal(key, shape, fan_in, fan_out, dtype=jnp.float32):
    """He/Kaiming normal, ``N(0, 2 / fan_in)``: keeps activations' scale through ReLU layers."""
    del fan_out
    return math.sqrt(2.0 / fan_in) * _random(key, shape, dtype)


def he_uniform(key, shape, fan_in, fan_out, dtype=jnp.float32):
    """He/Kaiming uniform, ``U(-a, a)`` with ``a = sqrt(6 / fan_in)`` (same variance as ``he_normal``)."""
    del fan_out
    a = math.sqrt(6.0 / fan_in)
    return _random(key, shape, dtype, uniform=(-a, a))


def lecun_normal(key, shape, fan_in, fan_out, dtype=jnp.float32):
    """LeCun normal, ``N(0, 1 / fan_in)``: for linear or tanh-like units."""
    del fan_out
    return math.sqrt(1.0 / fan_in) * _random(key, shape, dtype)


def glorot_uniform(key, shape, fan_in, fan_out, dtype=jnp.float32):
    """Glorot/Xavier uniform, ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``."""
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return _random(key, shape, dtype, uniform=(-a, a))


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
