"""The ``"direct"`` formulation: one fused multiply-add per filter tap (and channel), unrolled.

The right form where a GEMM degenerates to a matrix-vector product (one output
channel, or one input channel under a 1×1 filter). The sums run in
``accumulator(dtype)`` (float32 for bf16/f16) and are cast back at the end.

Each conv function returns its result and the path it took (``"direct"``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from tinyfn.layers.kernels.choice import Plan
from tinyfn.layers.kernels.geometry import accumulator, col2im, conv_output_size, pad_hw, taps
from tinyfn.layers.kernels.pooling import takes

__all__ = ["unrolled", "conv_forward", "conv_input_grad", "conv_weight_grad", "pool_argmax"]


def unrolled(x, kernel, stride, padding, how: Plan):
    """No ``X*`` is built: ``None``."""
    return None


def conv_forward(x, w, stride, padding, how: Plan, cols=None):
    """``y[n,k] = Σ_{c,i,j} w[k,c,i,j] xp[n,c,i+s·r,j+s·q]``, one term per tap and input channel."""
    _, c, kh, kw = w.shape
    acc = accumulator(x.dtype)
    xa, wa = x.astype(acc), w.astype(acc)
    out_hw = conv_output_size(x.shape[2:], (kh, kw), stride, padding)
    y = None
    for t, tap in enumerate(taps(pad_hw(xa, padding), (kh, kw), out_hw, stride)):
        for ci in range(c):
            term = tap[:, ci : ci + 1] * wa[None, :, ci, t // kw, t % kw, None, None]
            y = term if y is None else y + term
    return y.astype(x.dtype), "direct"


def conv_input_grad(g, w, stride, padding, in_hw, how: Plan):
    """``W*ᵀ g``: per tap ``Σ_k g[:, k] w[k, :, i, j]``, added back under the tap (col2im)."""
    k, c, kh, kw = w.shape
    n, _, ho, wo = g.shape
    acc = accumulator(g.dtype)
    ga, wt = g.astype(acc), w.astype(acc).reshape(k, c, kh * kw)

    def tap_grad(t):  # as (N, Ho, Wo, C)
        wk = lax.dynamic_index_in_dim(wt, t, axis=2, keepdims=False)
        return sum(ga[:, kk : kk + 1] * wk[kk][None, :, None, None] for kk in range(k)).transpose(0, 2, 3, 1)

    dx = col2im(tap_grad, (kh, kw), in_hw, stride, padding, (n, ho, wo, c), acc).transpose(0, 3, 1, 2)
    return dx.astype(g.dtype), "direct"


def conv_weight_grad(x, g, stride, padding, kernel, how: Plan, cols=None):
    """``dw[k,c,i,j] = Σ_{n,r,q} g[n,k,r,q] xp[n,c,i+s·r,j+s·q]``, one reduction per tap."""
    k, c = g.shape[1], x.shape[1]
    acc = accumulator(x.dtype)
    ga = g.astype(acc)
    tap_views = taps(pad_hw(x.astype(acc), padding), kernel, g.shape[2:], stride)
    dw = jnp.stack([(ga[:, :, None] * tap[:, None]).sum((3, 4)).sum(0) for tap in tap_views], axis=-1)
    return dw.reshape(k, c, *kernel).astype(g.dtype), "direct"


def pool_argmax(x, window, stride, padding, out_hw, real):
    """The running maximum over the taps, unrolled."""
    kh, kw = window
    views = taps(pad_hw(x, padding, -jnp.inf), window, out_hw, stride)
    mask = (lambda t: None) if real is None else (lambda t: jnp.asarray(real[t][None, None]))  # noqa: E731
    best, code, best_real = views[0], jnp.zeros(views[0].shape, jnp.int32), mask(0)
    for t in range(1, kh * kw):
        take = takes(views[t], best, mask(t), best_real)
        best, code = jnp.where(take, views[t], best), jnp.where(take, t, code)
        if real is not None:
            best_real = jnp.where(take, mask(t), best_real)
    return best, code
