"""Group normalisation (Wu and He, 2018) on ``(N, C, ...)``, with its handwritten backward rule.

The ``C`` channels are split into ``G`` groups of ``C/G`` consecutive channels; each sample's group is
standardised over its ``M = (C/G)·H·W…`` values, then each channel gets its own affine map::

    x̂ = (x - μ_ng) / √(σ²_ng + ε),   y = γ_c x̂ + β_c

Per group this is layer normalisation, so the backward is layer norm's closed form per group
(``tinyfn.layers.norm``), with ``ĝ = γ g``::

    dx = (1/σ)(ĝ − mean(ĝ) − x̂ mean(ĝ x̂)),   dγ_c = Σ g x̂,   dβ_c = Σ g   (sums over every axis but C)

``G = 1`` is layer norm over ``(C, H, W)`` with per-channel weights; ``G = C`` is instance norm.
PyTorch's ``nn.GroupNorm`` semantics (weight and bias per channel, biased variance).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from tinyfn import _checks
from tinyfn.layers.base import Layer, make_layer
from tinyfn.layers.norm import _check_eps, _norm_args, _normalized_bwd, _standardize, _wide
from tinyfn.layers.spec import register_layer

__all__ = ["group_norm", "GroupNorm"]


def _grouped(x, groups):
    """``(N, C, ...) -> (N, G, (C/G)·…)``: each row one sample's group."""
    return x.reshape(x.shape[0], groups, math.prod(x.shape[1:]) // groups)


def _per_channel(v, x):
    """A ``(C,)`` vector broadcast against ``x (N, C, ...)``."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _affine(x_hat, gamma, beta, x):
    y = _per_channel(_wide(gamma), x) * x_hat.reshape(x.shape) + _per_channel(_wide(beta), x)
    return y.astype(x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _group_norm(x, gamma, beta, groups, eps):
    return _affine(_standardize(_grouped(x, groups), 2, eps)[0], gamma, beta, x)


def _group_norm_fwd(x, gamma, beta, groups, eps):
    x_hat, inv_sigma, _, _ = _standardize(_grouped(x, groups), 2, eps)  # float32 at least
    return _affine(x_hat, gamma, beta, x), (x_hat, inv_sigma, gamma)


def _group_norm_bwd(groups, eps, res, g):
    x_hat, inv_sigma, gamma = res
    g32 = _wide(g)  # the sums in float32 at least, the cotangents cast back
    axes = (0, *range(2, g.ndim))
    x_hat_c = x_hat.reshape(g.shape)
    dbeta = jnp.sum(g32, axis=axes)  # Law 1 with A = [1 … 1] per channel
    dgamma = jnp.sum(g32 * x_hat_c, axis=axes)  # Law 2 with C = diag(x̂) per channel
    # dx = (1/M)(1/σ)(M ĝ − Σĝ − x̂ Σ ĝ x̂) with ĝ = γ g, per sample and group: layer norm's closed form
    g_hat = _grouped(_per_channel(_wide(gamma), g) * g32, groups)
    dx = _normalized_bwd(g_hat, x_hat, inv_sigma, 2).reshape(g.shape).astype(g.dtype)
    return dx, dgamma.astype(gamma.dtype), dbeta.astype(gamma.dtype)


_group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


def _check_groups(op, num_groups, channels):
    num_groups = _checks.positive_int("num_groups", num_groups, op=op)
    if channels % num_groups:
        raise ValueError(
            f"{op}: num_groups {num_groups} must divide the number of channels C = {channels} "
            f"(C / num_groups = {channels / num_groups:g})"
        )
    return num_groups


def group_norm(x, gamma=None, beta=None, *, num_groups: int, eps: float = 1e-5):
    """Group normalisation (PyTorch's ``F.group_norm``).

    Args:
      x: ``(N, C, ...)`` (``(N, C, H, W)`` for images), ``C`` a multiple of ``num_groups``.
      gamma, beta: ``(C,)`` per-channel scale and shift, or ``None`` (1 and 0).
      num_groups: ``G``; each sample's ``C/G`` consecutive channels (with all their positions) are standardised
        together.
      eps: added to the biased variance.

    Returns:
      ``y`` shaped like ``x``.

    Backward (handwritten): layer norm's closed form per (sample, group); ``dγ = Σ g x̂``, ``dβ = Σ g`` per channel.
    """
    x = _checks.float_array("x", x, op="group_norm")
    if x.ndim < 2:
        raise ValueError(f"group_norm: x must have rank >= 2 (N, C, ...), got shape {tuple(x.shape)}")
    groups = _check_groups("group_norm", num_groups, x.shape[1])
    gamma, beta = _norm_args("group_norm", x, gamma, beta, (x.shape[1],))
    return _group_norm(x, gamma, beta, groups, _check_eps("group_norm", eps))


def GroupNorm(num_groups: int, eps: float = 1e-5, affine: bool = True) -> Layer:
    """Group normalisation of ``(N, C, ...)`` (``torch.nn.GroupNorm``; no state, the same in training and evaluation).

    Params ``{"gamma": (C,), "beta": (C,)}`` starting at 1 and 0 (none without ``affine``). ``C`` must be a
    multiple of ``num_groups`` (checked at ``init``).
    """
    num_groups = _checks.positive_int("num_groups", num_groups, op="GroupNorm")
    eps = _check_eps("GroupNorm", eps)

    def init(key, input_shape):
        shape = _checks.input_shape(input_shape, op="GroupNorm")
        if len(shape) < 2:
            raise ValueError(f"GroupNorm: input_shape must be (N, C, ...), got {shape}")
        _check_groups("GroupNorm", num_groups, shape[1])
        c = shape[1]
        params = {"gamma": jnp.ones((c,), jnp.float32), "beta": jnp.zeros((c,), jnp.float32)} if affine else {}
        return shape, params

    def apply(params, x, *, key=None, train=False):
        x = _checks.float_array("x", x, op="GroupNorm")
        gamma, beta = (params[k].astype(x.dtype) if affine else None for k in ("gamma", "beta"))
        return group_norm(x, gamma, beta, num_groups=num_groups, eps=eps)

    config = {"num_groups": num_groups, "eps": eps, "affine": affine}
    return make_layer("GroupNorm", init, apply, config=config)


register_layer("GroupNorm", GroupNorm)
