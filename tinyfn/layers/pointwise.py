"""Smooth and leaky elementwise activations: ``leaky_relu``, ``sigmoid``, ``tanh``, ``silu``, ``gelu``.

Each is ``y = f(x)`` applied entry by entry, so its Jacobian is the diagonal
matrix ``diag(f'(x))`` and the backward rule is ``dx = g · f'(x)``: each rule
below states ``f'``. The forward of every rule's ``fwd`` is the plain function
(not the ``custom_vjp`` one), so forward mode (``jax.jvp``, ``jax.hessian``)
runs through it. Shapes: any; the output has ``x``'s shape and dtype.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from tinyfn import _checks
from tinyfn.layers.base import Layer, parameterless
from tinyfn.layers.spec import register_layer

__all__ = ["leaky_relu", "sigmoid", "tanh", "silu", "gelu", "LeakyReLU", "Sigmoid", "Tanh", "SiLU", "GELU"]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


def _plain_leaky_relu(x, negative_slope):
    return jnp.where(x > 0, x, negative_slope * x)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _leaky_relu(x, negative_slope):
    return _plain_leaky_relu(x, negative_slope)


def _leaky_relu_fwd(x, negative_slope):  # the plain forward, so that forward mode can run through this rule
    return _plain_leaky_relu(x, negative_slope), x


def _leaky_relu_bwd(negative_slope, x, g):
    # f'(x) = 1 for x > 0, negative_slope otherwise (at the kink x = 0 too, as PyTorch)
    return (jnp.where(x > 0, g, negative_slope * g),)


_leaky_relu.defvjp(_leaky_relu_fwd, _leaky_relu_bwd)


def _plain_sigmoid(x):
    e = jnp.exp(-jnp.abs(x))  # in (0, 1]: never overflows, for any |x|
    return jnp.where(x >= 0, 1 / (1 + e), e / (1 + e))


@jax.custom_vjp
def _sigmoid(x):
    return _plain_sigmoid(x)


def _sigmoid_fwd(x):  # the plain forward, so that forward mode can run through this rule
    y = _plain_sigmoid(x)
    return y, y


def _sigmoid_bwd(y, g):
    return (g * y * (1 - y),)  # σ'(x) = σ(x) (1 - σ(x))


_sigmoid.defvjp(_sigmoid_fwd, _sigmoid_bwd)


@jax.custom_vjp
def _tanh(x):
    return jnp.tanh(x)


def _tanh_fwd(x):  # the plain forward, so that forward mode can run through this rule
    y = jnp.tanh(x)
    return y, y


def _tanh_bwd(y, g):
    return (g * (1 - y * y),)  # tanh'(x) = 1 - tanh(x)²


_tanh.defvjp(_tanh_fwd, _tanh_bwd)


@jax.custom_vjp
def _silu(x):
    return x * _plain_sigmoid(x)


def _silu_fwd(x):  # the plain forward, so that forward mode can run through this rule
    s = _plain_sigmoid(x)
    return x * s, (x, s)


def _silu_bwd(res, g):
    x, s = res
    return (g * s * (1 + x * (1 - s)),)  # (x σ(x))' = σ(x) + x σ(x)(1 - σ(x)) by the product rule


_silu.defvjp(_silu_fwd, _silu_bwd)


def _plain_gelu(x, approximate):
    if approximate:
        return 0.5 * x * (1 + jnp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)))
    return 0.5 * x * (1 + erf(x / math.sqrt(2.0)))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gelu(x, approximate):
    return _plain_gelu(x, approximate)


def _gelu_fwd(x, approximate):  # the plain forward, so that forward mode can run through this rule
    return _plain_gelu(x, approximate), x


def _gelu_bwd(approximate, x, g):
    if approximate:
        # (½ x (1 + tanh u))' = ½ (1 + tanh u) + ½ x (1 - tanh² u) u',  u = √(2/π)(x + 0.044715 x³)
        t = jnp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
        return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du),)
    # (x Φ(x))' = Φ(x) + x φ(x), Φ the standard normal CDF and φ its density
    cdf = 0.5 * (1 + erf(x / math.sqrt(2.0)))
    pdf = jnp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return (g * (cdf + x * pdf),)


_gelu.defvjp(_gelu_fwd, _gelu_bwd)


def _slope(value, op):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{op}: negative_slope must be a finite float, got {value!r}")
    return float(value)


def _approximate(value, op):
    """``False``/``'none'`` (the erf form) or ``True``/``'tanh'`` (the tanh form), as a bool."""
    if value is False or (isinstance(value, str) and value == "none"):
        return False
    if value is True or (isinstance(value, str) and value == "tanh"):
        return True
    raise ValueError(f"{op}: approximate must be False or 'none' (erf form), True or 'tanh' (tanh form), got {value!r}")


def leaky_relu(x, negative_slope: float = 0.01):
    """``x`` where ``x > 0``, ``negative_slope · x`` elsewhere (``F.leaky_relu``).

    Backward (handwritten): ``g`` where ``x > 0``, ``negative_slope · g`` elsewhere.
    """
    return _leaky_relu(_checks.float_array("x", x, op="leaky_relu"), _slope(negative_slope, "leaky_relu"))


def sigmoid(x):
    """``σ(x) = 1 / (1 + e^{-x})``, evaluated through ``e^{-|x|}`` so that no exponential overflows.

    Backward (handwritten): ``g · σ(x) (1 - σ(x))``.
    """
    return _sigmoid(_checks.float_array("x", x, op="sigmoid"))


def tanh(x):
    """``tanh(x)``. Backward (handwritten): ``g · (1 - tanh²(x))``."""
    return _tanh(_checks.float_array("x", x, op="tanh"))


def silu(x):
    """``x σ(x)`` (also called swish). Backward (handwritten): ``g · σ(x) (1 + x (1 - σ(x)))``."""
    return _silu(_checks.float_array("x", x, op="silu"))


def gelu(x, approximate=False):
    """``x Φ(x)``, ``Φ`` the standard normal CDF (``F.gelu``).

    ``approximate=False`` (or ``'none'``): the exact form ``½ x (1 + erf(x/√2))``;
    ``approximate=True`` (or ``'tanh'``): ``½ x (1 + tanh(√(2/π)(x + 0.044715 x³)))``.

    Backward (handwritten): ``g · (Φ(x) + x φ(x))``, or the tanh form's derivative.
    """
    return _gelu(_checks.float_array("x", x, op="gelu"), _approximate(approximate, "gelu"))


def LeakyReLU(negative_slope: float = 0.01) -> Layer:
    """``leaky_relu`` as a layer (no params)."""
    negative_slope = _slope(negative_slope, "LeakyReLU")
    return parameterless("LeakyReLU", partial(leaky_relu, negative_slope=negative_slope), negative_slope=negative_slope)


def Sigmoid() -> Layer:
    """``sigmoid`` as a layer (no params)."""
    return parameterless("Sigmoid", sigmoid)


def Tanh() -> Layer:
    """``tanh`` as a layer (no params)."""
    return parameterless("Tanh", tanh)


def SiLU() -> Layer:
    """``silu`` as a layer (no params)."""
    return parameterless("SiLU", silu)


def GELU(approximate=False) -> Layer:
    """``gelu`` as a layer (no params); ``approximate`` as in ``gelu``, recorded as a bool."""
    approximate = _approximate(approximate, "GELU")
    return parameterless("GELU", partial(gelu, approximate=approximate), approximate=approximate)


for _constructor in (LeakyReLU, Sigmoid, Tanh, SiLU, GELU):
    register_layer(_constructor.__name__, _constructor)
