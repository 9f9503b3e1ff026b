"""Batch normalisation and layer normalisation, with their handwritten backward rules.

Both standardise ``x`` over some axes and apply a per-feature affine map::

    μ = mean(x),  σ² = mean((x - μ)²)  (biased),  σ = √(σ² + ε)
    x̂ = (x - μ) / σ,   y = γ x̂ + β

With ``M`` the number of elements averaged and sums ``Σ`` over the same axes,
the backward is the classic closed form (derived by the chain rule through
``μ`` and ``σ``: ``∂x̂ᵢ/∂xⱼ = (δᵢⱼ - 1/M - x̂ᵢ x̂ⱼ / M) / σ``)::

    dβ = Σ g,   dγ = Σ g x̂,   dx = (1/M) γ/σ (M g − Σ g − x̂ Σ g x̂)

``batch_norm`` averages over every axis but the channel axis 1 (the batch and
the spatial positions); ``layer_norm`` over the trailing feature axes of each
sample. In evaluation, batch norm is the per-channel affine map
``y = γ (x - m)/√(v + ε) + β`` with the running statistics ``m``, ``v``.

Precision: the statistics, sums and products are computed in float32 for
float16 and bfloat16 inputs (as PyTorch does) and the results cast back, so a
float16 batch at standard deviation 300 (variance 9·10⁴, past float16's 65504)
normalises to standard deviation 1. ``batch_norm_with_stats`` returns its
statistics in that float32.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from tinyfn import _checks
from tinyfn.layers.base import Layer, make_layer

__all__ = [
    "batch_norm",
    "batch_norm_with_stats",
    "batch_norm_inference",
    "layer_norm",
    "BatchNorm1D",
    "BatchNorm2D",
    "LayerNorm",
]


def _wide(a):
    """``a`` in its accumulation dtype: float32 for float16/bfloat16 (float64 stays float64)."""
    return a.astype(jnp.promote_types(a.dtype, jnp.float32))


def _bcast(v, x, axes):
    """A per-feature vector (over the axes not in ``axes``) broadcast against ``x``."""
    shape = [1 if a in axes else x.shape[a] for a in range(x.ndim)]
    return v.reshape(shape)


def _standardize(x, axes, eps):
    """``x̂``, ``1/σ`` and the mean and biased variance over ``axes`` (kept as size-1 axes), float32 at least."""
    x = _wide(x)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    var = jnp.mean(centered * centered, axis=axes, keepdims=True)
    inv_sigma = jax.lax.rsqrt(var + jnp.asarray(eps, x.dtype))
    return centered * inv_sigma, inv_sigma, mean, var


def _normalized_bwd(g_hat, x_hat, inv_sigma, axes):
    """``dx = (1/σ)(ĝ − mean(ĝ) − x̂ mean(ĝ x̂))`` for ``ĝ = dL/dx̂``: the closed form divided through by ``M``."""
    g_hat = _wide(g_hat)
    mean_g = jnp.mean(g_hat, axis=axes, keepdims=True)
    mean_gx = jnp.mean(g_hat * x_hat, axis=axes, keepdims=True)
    return inv_sigma * (g_hat - mean_g - x_hat * mean_gx)


# ---- batch norm, training mode (batch statistics) ----------------------------------------
# An image batch (N, C, H, W) is normalised as (C, H·W·N): channels first, every statistic a sum over one
# contiguous row. It is the layout the im2col convolutions compute in (``kernels.chwn``), so the
# transposes at either end cancel against a neighbouring convolution's instead of being copies.


def _bn_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _channels_first(x):
    """``(N, C, ...) -> (C, M)``, ``M = N·H·W…``: for 4-D ``x`` through the ``(C, H, W, N)`` layout."""
    if x.ndim == 4:
        return x.transpose(1, 2, 3, 0).reshape(x.shape[1], -1)
    return jnp.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


def _channels_back(y, shape):
    """Inverse of ``_channels_first`` for an ``x`` of ``shape``."""
    n, c, *rest = shape
    if len(shape) == 4:
        return y.reshape(c, *rest, n).transpose(3, 0, 1, 2)
    return jnp.moveaxis(y.reshape(c, n, *rest), 0, 1)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm(x, gamma, beta, eps):
    """``(y, μ_B, σ²_B)``: the normalised batch and its per-channel mean and biased variance."""
    return _batch_norm_fwd(x, gamma, beta, eps)[0]


def _batch_norm_fwd(x, gamma, beta, eps):
    x_hat, inv_sigma, mean, var = _standardize(_channels_first(x), 1, eps)  # float32 at least
    y = _channels_back(_wide(gamma)[:, None] * x_hat + _wide(beta)[:, None], x.shape).astype(x.dtype)
    return (y, mean[:, 0], var[:, 0]), (x_hat, inv_sigma, gamma)


def _batch_norm_bwd(eps, res, cotangents):
    x_hat, inv_sigma, gamma = res
    g, g_mean, g_var = cotangents
    shape = g.shape
    g2 = _wide(_channels_first(g))  # the sums in float32 at least, the cotangents cast back
    dbeta = jnp.sum(g2, axis=1)  # Law 1 with A = [1 … 1] per channel
    dgamma = jnp.sum(g2 * x_hat, axis=1)  # Law 2 with C = diag(x̂) per channel
    # dx = (1/M) γ/σ (M g − Σg − x̂ Σ g x̂): the closed form of the module docstring, its sums being dβ and dγ
    m = x_hat.shape[1]
    dx = (_wide(gamma)[:, None] * inv_sigma) * (g2 - (dbeta[:, None] + x_hat * dgamma[:, None]) / m)
    # the statistics as outputs (for the running estimates): ∂μ/∂xᵢ = 1/M, ∂σ²/∂xᵢ = 2 (xᵢ − μ)/M = 2 σ x̂ᵢ / M
    dx = dx + (_wide(g_mean)[:, None] + (2 * _wide(g_var)[:, None] / inv_sigma) * x_hat) / m
    return _channels_back(dx, shape).astype(g.dtype), dgamma.astype(gamma.dtype), dbeta.astype(gamma.dtype)


_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def _norm_args(op, x, gamma, beta, channels_axis_shape):
    if gamma is None:
        gamma = jnp.ones(channels_axis_shape, x.dtype)
    if beta is None:
        beta = jnp.zeros(channels_axis_shape, x.dtype)
    gamma = _checks.float_array("gamma", gamma, empty_batch=False, op=op)
    beta = _checks.float_array("beta", beta, empty_batch=False, op=op)
    for name, v in (("gamma", gamma), ("beta", beta)):
        if tuple(v.shape) != tuple(channels_axis_shape):
            raise ValueError(
                f"{op}: {name} has shape {tuple(v.shape)}, expected {tuple(channels_axis_shape)} for x of shape "
                f"{tuple(x.shape)}"
            )
    _checks.same_dtype(op, x=x, gamma=gamma, beta=beta)
    return gamma, beta


def _check_eps(op, eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{op}: eps must be a positive float, got {eps!r}")
    return float(eps)


def batch_norm(x, gamma=None, beta=None, *, eps: float = 1e-5):
    """Batch normalisation with the batch's statistics (training mode).

    Args:
      x: ``(N, C)`` or ``(N, C, ...)`` (``(N, C, H, W)`` for images); statistics over
        every axis but the channel axis 1, ``M = N·H·W`` values per channel, at least 2.
      gamma, beta: ``(C,)`` scale and shift, or ``None`` (1 and 0).
      eps: added to the biased variance.

    Returns:
      ``y`` shaped like ``x``: ``γ (x - μ_B)/√(σ²_B + ε) + β``.

    Backward (handwritten): ``dx = (1/M) γ/σ (M g − Σg − x̂ Σ g x̂)``, ``dγ = Σ g x̂``, ``dβ = Σ g``.
    """
    return batch_norm_with_stats(x, gamma, beta, eps=eps)[0]


def batch_norm_with_stats(x, gamma=None, beta=None, *, eps: float = 1e-5):
    """``batch_norm``'s ``y`` and the batch statistics it used: ``(y, mean, var)``, ``mean`` and the
    *biased* ``var`` of shape ``(C,)``, computed once for both (the layer's running estimates read them),
    in float32 for a float16 or bfloat16 ``x`` (their accumulation dtype; float64 for float64).

    The handwritten backward covers all three outputs: ``dx`` gains ``(g_μ + 2 σ x̂ g_σ²)/M``.
    """
    x = _checks.float_array("x", x, op="batch_norm")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: x must have rank >= 2 (N, C, ...), got shape {tuple(x.shape)}")
    m = x.size // x.shape[1] if x.shape[1] else 0
    if m < 2:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel in training, got x of shape {tuple(x.shape)}"
        )
    gamma, beta = _norm_args("batch_norm", x, gamma, beta, (x.shape[1],))
    return _batch_norm(x, gamma, beta, _check_eps("batch_norm", eps))


# ---- batch norm, evaluation mode (running statistics): a per-channel affine map --------


def _plain_bn_inference(x, mean, var, gamma, beta, eps):
    axes, dtype = _bn_axes(x), x.dtype
    x, mean, var, gamma, beta = (_wide(a) for a in (x, mean, var, gamma, beta))  # computed in float32 at least
    scale = gamma * jax.lax.rsqrt(var + jnp.asarray(eps, var.dtype))
    return (_bcast(scale, x, axes) * (x - _bcast(mean, x, axes)) + _bcast(beta, x, axes)).astype(dtype)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _bn_inference(x, mean, var, gamma, beta, eps):
    return _plain_bn_inference(x, mean, var, gamma, beta, eps)


def _bn_inference_fwd(x, mean, var, gamma, beta, eps):  # the plain forward, so that forward mode runs through it
    return _plain_bn_inference(x, mean, var, gamma, beta, eps), (x, mean, var, gamma)


def _bn_inference_bwd(eps, res, g):
    x, mean, var, gamma = res
    axes, dtypes = _bn_axes(x), (x.dtype, mean.dtype, var.dtype, gamma.dtype, gamma.dtype)
    x, mean, var, gamma, g = (_wide(a) for a in (x, mean, var, gamma, g))  # the sums in float32 at least
    inv_sigma = jax.lax.rsqrt(var + jnp.asarray(eps, var.dtype))
    centered = x - _bcast(mean, x, axes)
    dx = _bcast(gamma * inv_sigma, g, axes) * g  # Law 1 with A = diag(γ/σ) per channel
    dbeta = jnp.sum(g, axis=axes)
    dgamma = jnp.sum(g * centered, axis=axes) * inv_sigma
    dmean = -gamma * inv_sigma * dbeta
    dvar = -0.5 * gamma * inv_sigma**3 * jnp.sum(g * centered, axis=axes)  # d(v + ε)^(-1/2)/dv = -½ σ⁻³
    return tuple(a.astype(d) for a, d in zip((dx, dmean, dvar, dgamma, dbeta), dtypes))


_bn_inference.defvjp(_bn_inference_fwd, _bn_inference_bwd)


def batch_norm_inference(x, mean, var, gamma=None, beta=None, *, eps: float = 1e-5):
    """Batch normalisation with given statistics (evaluation mode): ``γ (x - mean)/√(var + ε) + β``.

    ``x`` is ``(N, C, ...)``; ``mean``, ``var``, ``gamma``, ``beta`` are ``(C,)``.
    Backward (handwritten): ``dx = g γ/σ``, and the sums over every axis but 1 for the vectors.
    """
    x = _checks.float_array("x", x, op="batch_norm_inference")
    if x.ndim < 2:
        raise ValueError(f"batch_norm_inference: x must have rank >= 2 (N, C, ...), got shape {tuple(x.shape)}")
    gamma, beta = _norm_args("batch_norm_inference", x, gamma, beta, (x.shape[1],))
    mean, var = _norm_args("batch_norm_inference", x, mean, var, (x.shape[1],))
    return _bn_inference(x, mean, var, gamma, beta, _check_eps("batch_norm_inference", eps))


# ---- layer norm ---------------------------------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, gamma, beta, eps):
    axes = tuple(range(x.ndim - gamma.ndim, x.ndim))
    x_hat = _standardize(x, axes, eps)[0]  # float32 at least
    return (_lead(_wide(gamma), x) * x_hat + _lead(_wide(beta), x)).astype(x.dtype)


def _lead(v, x):
    """A trailing-shape vector with leading 1s, to broadcast against ``x`` explicitly."""
    return v.reshape((1,) * (x.ndim - v.ndim) + v.shape)


def _layer_norm_fwd(x, gamma, beta, eps):
    axes = tuple(range(x.ndim - gamma.ndim, x.ndim))
    x_hat, inv_sigma, _, _ = _standardize(x, axes, eps)  # float32 at least
    return (_lead(_wide(gamma), x) * x_hat + _lead(_wide(beta), x)).astype(x.dtype), (x_hat, inv_sigma, gamma)


def _layer_norm_bwd(eps, res, g):
    x_hat, inv_sigma, gamma = res
    lead = tuple(range(g.ndim - gamma.ndim))
    axes = tuple(range(g.ndim - gamma.ndim, g.ndim))
    # dx = (1/M)(1/σ)(M ĝ − Σĝ − x̂ Σ ĝ x̂) with ĝ = γ g, per sample; dγ, dβ sum over the samples
    g32 = _wide(g)  # the sums in float32 at least, the cotangents cast back
    dx = _normalized_bwd(_lead(_wide(gamma), g) * g32, x_hat, inv_sigma, axes).astype(g.dtype)
    return dx, jnp.sum(g32 * x_hat, axis=lead).astype(gamma.dtype), jnp.sum(g32, axis=lead).astype(gamma.dtype)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def layer_norm(x, gamma=None, beta=None, *, normalized_ndim: int = 1, eps: float = 1e-5):
    """Layer normalisation over the trailing ``normalized_ndim`` axes of each sample (PyTorch's ``F.layer_norm``).

    ``gamma`` and ``beta`` have the trailing shape ``x.shape[-normalized_ndim:]`` (``None``: 1 and 0).
    Backward (handwritten): the closed form of the module docstring, per sample.
    """
    x = _checks.float_array("x", x, op="layer_norm")
    normalized_ndim = _checks.positive_int("normalized_ndim", normalized_ndim, op="layer_norm")
    if x.ndim <= normalized_ndim:
        raise ValueError(
            f"layer_norm: x must have a batch axis and {normalized_ndim} normalised axes, got shape {tuple(x.shape)}"
        )
    gamma, beta = _norm_args("layer_norm", x, gamma, beta, x.shape[x.ndim - normalized_ndim :])
    return _layer_norm(x, gamma, beta, _check_eps("layer_norm", eps))


# ---- layers ---------------------------------------------------------------------------------


def _batch_norm_layer(name, ndims, layout, momentum, eps, affine):
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"{name}: momentum must be in [0, 1] (PyTorch's: weight of the new batch), got {momentum!r}")
    eps = _check_eps(name, eps)

    def init_with_state(key, input_shape):
        shape = _checks.input_shape(input_shape, op=name)
        if len(shape) not in ndims:
            raise ValueError(f"{name}: input_shape must be {layout}, got {shape}")
        c = shape[1]
        params = {"gamma": jnp.ones((c,), jnp.float32), "beta": jnp.zeros((c,), jnp.float32)} if affine else {}
        return shape, params, {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}

    def apply_with_state(params, state, x, *, key=None, train=False):
        x = _checks.float_array("x", x, op=name)
        if x.ndim not in ndims:
            raise ValueError(f"{name}: x must have shape {layout}, got {tuple(x.shape)}")
        gamma, beta = (params[k].astype(x.dtype) if affine else None for k in ("gamma", "beta"))
        if not train:
            mean, var = state["mean"].astype(x.dtype), state["var"].astype(x.dtype)
            return batch_norm_inference(x, mean, var, gamma, beta, eps=eps), state
        y, mean, var = batch_norm_with_stats(x, gamma, beta, eps=eps)
        mean, var = jax.lax.stop_gradient((mean, var))  # the running statistics are buffers, not differentiated
        m = x.size // x.shape[1]
        unbiased = var * (m / (m - 1))
        new_state = {
            "mean": ((1 - momentum) * state["mean"] + momentum * mean).astype(state["mean"].dtype),
            "var": ((1 - momentum) * state["var"] + momentum * unbiased).astype(state["var"].dtype),
        }
        return y, new_state

    config = {"momentum": momentum, "eps": eps, "affine": affine}
    return make_layer(name, config=config, init_with_state=init_with_state, apply_with_state=apply_with_state)


def BatchNorm2D(momentum: float = 0.1, eps: float = 1e-5, affine: bool = True) -> Layer:
    """Batch normalisation of ``(N, C, H, W)`` per channel (``torch.nn.BatchNorm2d``'s semantics).

    Params ``{"gamma": (C,), "beta": (C,)}`` (none without ``affine``); state
    ``{"mean": (C,), "var": (C,)}``, starting at 0 and 1. With ``train=True`` it
    normalises with the batch statistics and returns the state updated as
    ``r ← (1 - momentum) r + momentum b`` (``b`` the batch mean, and the
    *unbiased* batch variance); with ``train=False`` it uses the running ones.
    A stateful layer: use ``tinyfn.layers.init_with_state`` / ``apply_with_state``.
    """
    return _batch_norm_layer("BatchNorm2D", (4,), "(N, C, H, W)", momentum, eps, affine)


def BatchNorm1D(momentum: float = 0.1, eps: float = 1e-5, affine: bool = True) -> Layer:
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` (``torch.nn.BatchNorm1d``), e.g. after ``Linear``. See
    ``BatchNorm2D``."""
    return _batch_norm_layer("BatchNorm1D", (2, 3), "(N, C) or (N, C, L)", momentum, eps, affine)


def LayerNorm(normalized_ndim: int = 1, eps: float = 1e-5, affine: bool = True) -> Layer:
    """Layer normalisation over each sample's trailing ``normalized_ndim`` axes (``torch.nn.LayerNorm``; no state).

    Params ``{"gamma": trailing shape, "beta": trailing shape}`` (none without ``affine``).
    """
    normalized_ndim = _checks.positive_int("normalized_ndim", normalized_ndim, op="LayerNorm")
    eps = _check_eps("LayerNorm", eps)

    def init(key, input_shape):
        shape = _checks.input_shape(input_shape, op="LayerNorm")
        if len(shape) <= normalized_ndim:
            raise ValueError(
                f"LayerNorm: input_shape must have a batch entry and {normalized_ndim} normalised axes, got {shape}"
            )
        trailing = shape[len(shape) - normalized_ndim :]
        params = {"gamma": jnp.ones(trailing, jnp.float32), "beta": jnp.zeros(trailing, jnp.float32)} if affine else {}
        return shape, params

    def apply(params, x, *, key=None, train=False):
        x = _checks.float_array("x", x, op="LayerNorm")
        gamma, beta = (params[k].astype(x.dtype) if affine else None for k in ("gamma", "beta"))
        return layer_norm(x, gamma, beta, normalized_ndim=normalized_ndim, eps=eps)

    config = {"normalized_ndim": normalized_ndim, "eps": eps, "affine": affine}
    return make_layer("LayerNorm", init, apply, config=config)
