"""The ``"xla"`` formulation: the same products by XLA's own primitives and no loop.

``lax.conv_general_dilated`` for ``W X*``; the transposed convolution (the kernel
flipped and in/out swapped over ``g`` dilated by the stride) for ``W*ᵀ g``; a
convolution of ``x`` with ``g`` (batch as the contracted dimension,
``rhs_dilation`` = stride) for ``g X*ᵀ``; pooling by ``reduce_window`` and
equality masks (first maximum wins). On a GPU these lower to cuDNN, and a loop
there would synchronise with the host every iteration. Every convolution
accumulates in ``accumulator(dtype)`` (float32 for bf16/f16).

Each conv function returns its result and the path it took (``"xla"``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from tinyfn.layers.kernels.choice import Plan
from tinyfn.layers.kernels.geometry import accumulator, pad_hw, taps

__all__ = ["unrolled", "conv_forward", "conv_input_grad", "conv_weight_grad", "pool_argmax"]

_NCHW = ("NCHW", "OIHW", "NCHW")


def _conv(lhs, rhs, padding, dimension_numbers=_NCHW, **kw):
    """``lax.conv_general_dilated`` at stride 1 (or ``window_strides=``), accumulated in ``accumulator``."""
    strides = kw.pop("window_strides", (1, 1))
    y = lax.conv_general_dilated(
        lhs,
        rhs,
        strides,
        padding,
        dimension_numbers=dimension_numbers,
        preferred_element_type=accumulator(lhs.dtype),
        **kw,
    )
    return y.astype(lhs.dtype)


def unrolled(x, kernel, stride, padding, how: Plan):
    """No ``X*`` is built: ``None``."""
    return None


def conv_forward(x, w, stride, padding, how: Plan, cols=None):
    """``W X*``: one ``conv_general_dilated``."""
    (ph, pw) = padding
    return _conv(x, w, ((ph, ph), (pw, pw)), window_strides=stride), "xla"


def conv_input_grad(g, w, stride, padding, in_hw, how: Plan):
    """``W*ᵀ g``: a stride-1 convolution of ``g`` dilated by the stride (zeros between its rows and columns),
    with the kernel flipped and in/out swapped, padded by ``kh-1-p`` before and up to ``H`` after (cropping
    where negative). The dilation and padding are one explicit ``lax.pad``: given to the convolution as
    ``lhs_dilation``, XLA:CPU's simplifier aborts the process on some strided shapes (jax 0.10.2)."""
    _, _, kh, kw = w.shape
    ho, wo = g.shape[2:]
    lo = [kk - 1 - p for kk, p in zip((kh, kw), padding)]
    hi = [hw - (o - 1) * s - 1 - low + kk - 1 for hw, o, s, low, kk in zip(in_hw, (ho, wo), stride, lo, (kh, kw))]
    gd = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (0, 0, 0), *((a, b, s - 1) for a, b, s in zip(lo, hi, stride))))
    wt = jnp.flip(w, (2, 3)).transpose(1, 0, 2, 3)
    return _conv(gd, wt, ((0, 0), (0, 0))), "xla"


def conv_weight_grad(x, g, stride, padding, kernel, how: Plan, cols=None):
    """``g X*ᵀ``: a convolution of ``x`` with ``g`` as its kernel: the batch is the contracted (feature)
    dimension, the stride becomes the kernel's dilation. Rows past the last tap's reach are padded off
    (or cropped)."""
    rem = [(n + 2 * p - kk) % s for n, p, kk, s in zip(x.shape[2:], padding, kernel, stride)]
    pads = [(p, p - r) for p, r in zip(padding, rem)]
    crop = [max(-hi, 0) for _, hi in pads]
    if any(crop):
        x = x[:, :, : x.shape[2] - crop[0], : x.shape[3] - crop[1]]
    pad = [(lo, max(hi, 0)) for lo, hi in pads]
    dw = _conv(x, g, pad, ("CNHW", "IOHW", "NCHW"), rhs_dilation=stride)  # (C, K, kh, kw)
    return dw.transpose(1, 0, 2, 3), "xla"


def pool_argmax(x, window, stride, padding, out_hw, real):
    """The maximum by ``reduce_window``, its tap by equality masks (the first tap that equals it wins)."""
    (kh, kw), (sh, sw), (ph, pw) = window, stride, padding
    views = taps(pad_hw(x, padding, -jnp.inf), window, out_hw, stride)
    best = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, kh, kw), (1, 1, sh, sw), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    code = jnp.zeros(best.shape, jnp.int32)
    for t in reversed(range(kh * kw)):  # the last assignment (the first tap) wins
        hit = (views[t] == best) | (jnp.isnan(views[t]) & jnp.isnan(best))
        if real is not None:
            hit = hit & jnp.asarray(real[t][None, None])
        code = jnp.where(hit, t, code)
    return best, code
