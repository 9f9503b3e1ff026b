"""Inverted dropout: ``rate`` is the probability of *dropping* a unit."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tinyfn import _checks
from tinyfn.layers.base import Layer, make_layer

__all__ = ["dropout", "Dropout"]


def _plain_masked_scale(x, mask, scale):
    return jnp.where(mask, x * scale, jnp.zeros((), x.dtype))


@jax.custom_vjp
def _masked_scale(x, mask, scale):
    return _plain_masked_scale(x, mask, scale)


def _masked_scale_fwd(x, mask, scale):  # plain functions inside the rule, so that forward mode can run through it
    return _plain_masked_scale(x, mask, scale), (mask, scale)


def _masked_scale_bwd(res, g):
    mask, scale = res
    # Diagonal Jacobian diag(mask · scale): dx = g · mask · scale
    return _plain_masked_scale(g, mask, scale), None, None


_masked_scale.defvjp(_masked_scale_fwd, _masked_scale_bwd)


def dropout(key, x, rate, *, train: bool):
    """Zero each element with probability ``rate`` and scale the survivors by ``1 / (1 - rate)``.

    The expected output equals ``x``, so evaluation (``train=False``) is the
    identity. ``rate = 1`` drops everything. ``key`` is only needed when
    ``train`` is true and ``rate > 0``.

    Backward (handwritten): ``g`` times the same mask and scale.
    """
    rate = _checks.rate("rate", rate, op="dropout")
    if not isinstance(train, bool):
        raise TypeError(f"dropout: train must be a Python bool (it is static), got {train!r}")
    x = _checks.float_array("x", x, op="dropout")
    if not train or rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    if key is None:
        raise ValueError("dropout: key is None but train=True; pass a jax.random key to draw the mask")
    mask = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return _masked_scale(x, mask, jnp.asarray(1.0 / (1.0 - rate), x.dtype))


def Dropout(rate: float) -> Layer:
    """``dropout`` as a layer (no params). ``apply(..., key=k, train=True)`` drops; ``train=False`` is the identity."""
    rate = _checks.rate("rate", rate, op="Dropout")

    def init(key, input_shape):
        return _checks.input_shape(input_shape, op="Dropout"), {}

    def apply(params, x, *, key=None, train=False):
        return dropout(key, x, rate, train=train)

    return make_layer("Dropout", init, apply, config={"rate": rate})
