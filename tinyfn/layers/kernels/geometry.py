"""The geometry every formulation shares: output sizes, pooling arguments, layouts, filter taps.

``x (N, C, H, W)``, ``w (K, C, kh, kw)``, ``g (N, K, Ho, Wo)``; stride and padding are int pairs.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from tinyfn import _checks

__all__ = [
    "conv_output_size",
    "deconv_output_size",
    "pool_args",
    "pool_geometry",
    "accumulator",
    "chwn",
    "nchw",
    "pad_hw",
    "taps",
    "untap",
    "span",
    "valid_taps",
    "code_to_switches",
    "col2im",
]


def conv_output_size(size, kernel, stride, padding):
    """``floor((size + 2 padding - kernel) / stride) + 1`` per spatial dimension."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))


def deconv_output_size(size, kernel, stride, padding, output_padding):
    """``(size - 1) stride - 2 padding + kernel + output_padding`` per spatial dimension."""
    return tuple((n - 1) * s - 2 * p + k + o for n, k, s, p, o in zip(size, kernel, stride, padding, output_padding))


def pool_args(op, window, stride, padding):
    """A pooling's checked ``(window, stride, padding)``: int pairs, ``stride`` defaulting to ``window``,
    ``padding`` at most half the window."""
    window = _checks.int_pair("window", window, minimum=1, op=op)
    stride = window if stride is None else _checks.int_pair("stride", stride, minimum=1, op=op)
    padding = _checks.int_pair("padding", padding, minimum=0, op=op)
    if any(2 * p > k for p, k in zip(padding, window)):
        raise ValueError(f"{op}: padding {padding} must be at most half of window {window}")
    return window, stride, padding


def pool_geometry(in_hw, window, stride, padding) -> str:
    """Which routing a pooling geometry takes: ``"tiled"`` (windows tile the input exactly),
    ``"tiled-remainder"`` (they tile it but for the last rows/columns), ``"padded"``,
    ``"overlapping"`` (stride < window) or ``"gapped"`` (stride > window)."""
    if padding != (0, 0):
        return "padded"
    if stride == window:
        return "tiled" if all(n % k == 0 for n, k in zip(in_hw, window)) else "tiled-remainder"
    return "overlapping" if any(s < k for s, k in zip(stride, window)) else "gapped"


def accumulator(dtype):
    """The dtype sums of ``dtype`` products run in: float32 for bfloat16 and float16 (as PyTorch and
    cuDNN do), the dtype itself from float32 up. Results are cast back to ``dtype``."""
    return jnp.promote_types(dtype, jnp.float32)


def chwn(x):
    """``(N, C, H, W) -> (C, H, W, N)``: the layout of the ``im2col`` kernels."""
    return x.transpose(1, 2, 3, 0)


def nchw(x):
    """``(C, H, W, N) -> (N, C, H, W)``; between two tinyfn ops it cancels the next ``chwn``."""
    return x.transpose(3, 0, 1, 2)


def pad_hw(x, padding, value=0.0, *, layout="NCHW"):
    """``x`` with ``padding`` rows/columns of ``value`` on both sides of its spatial axes."""
    ph, pw = padding
    if not (ph or pw):
        return x
    spatial = ((ph, ph), (pw, pw))
    widths = ((0, 0), (0, 0), *spatial) if layout == "NCHW" else ((0, 0), *spatial, (0, 0))
    return jnp.pad(x, widths, constant_values=value)


def taps(xp, kernel, out_hw, stride):
    """The strided view of the padded ``xp (N, C, Hp, Wp)`` under each filter tap ``(i, j)``, row-major:
    ``xp[:, :, i + stride*r, j + stride*c]`` for ``r < Ho, c < Wo``; each ``(N, C, Ho, Wo)``."""
    (kh, kw), (ho, wo), (sh, sw) = kernel, out_hw, stride
    n, c = xp.shape[:2]
    return [
        lax.slice(xp, (0, 0, i, j), (n, c, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1), (1, 1, sh, sw))
        for i in range(kh)
        for j in range(kw)
    ]


def untap(c, i, j, in_hw, stride, padding):
    """Transpose of taking tap ``(i, j)`` from the padded input: scatter ``c (N, C, Ho, Wo)`` to rows
    ``i - p + stride*r`` and columns ``j - p + stride*c`` of a zero ``(N, C, H, W)`` (one ``lax.pad``)."""
    (h, w), (sh, sw), (ph, pw) = in_hw, stride, padding
    ho, wo = c.shape[2:]
    lo_h, lo_w = i - ph, j - pw
    rows = (lo_h, h - lo_h - (ho - 1) * sh - 1, sh - 1)
    cols = (lo_w, w - lo_w - (wo - 1) * sw - 1, sw - 1)
    return lax.pad(c, jnp.zeros((), c.dtype), ((0, 0, 0), (0, 0, 0), rows, cols))


def span(out_hw, stride):
    """Rows and columns of the input that one tap's strided view spans."""
    return tuple((o - 1) * s + 1 for o, s in zip(out_hw, stride))


def valid_taps(in_hw, window, stride, padding, out_hw):
    """Per tap ``t``, a bool ``(Ho, Wo)`` mask (numpy, static) of the windows where tap ``t`` reads the
    real input, not the padding; ``None`` without padding."""
    if padding == (0, 0):
        return None
    (kh, kw), (sh, sw), (ph, pw), (h, w) = window, stride, padding, in_hw
    rows = np.arange(out_hw[0])[:, None] * sh - ph + np.arange(kh)[None, :]  # (Ho, kh)
    cols = np.arange(out_hw[1])[:, None] * sw - pw + np.arange(kw)[None, :]
    rok, cok = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    return [rok[:, i][:, None] & cok[:, j][None, :] for i in range(kh) for j in range(kw)]


def code_to_switches(code, window, stride, padding, in_w):
    """Window-local taps to PyTorch-style flat indices ``h * W + w`` in the input plane."""
    ho, wo = code.shape[2:]
    kw = window[1]
    rows = jnp.arange(ho, dtype=jnp.int32)[None, None, :, None] * stride[0] - padding[0] + code // kw
    cols = jnp.arange(wo, dtype=jnp.int32)[None, None, None, :] * stride[1] - padding[1] + code % kw
    return rows * in_w + cols


def col2im(tap_grad, kernel, in_hw, stride, padding, shape, dtype):
    """Add each ``tap_grad(t) (A, Ho, Wo, B)`` back under tap ``t`` of a zero padded ``(A, H + 2ph, W + 2pw, B)``
    (the transpose of stacking the taps), then crop the padding. A loop, so the result is computed once."""
    (kh, kw), (sh, sw), (ph, pw), (h, w) = kernel, stride, padding, in_hw
    a, _, _, b = shape
    zero = jnp.zeros((), dtype)

    def add(t, acc):
        d = lax.pad(tap_grad(t), zero, ((0, 0, 0), (0, 0, sh - 1), (0, 0, sw - 1), (0, 0, 0)))  # stride: zeros between
        at = (0, t // kw, t % kw, 0)
        return lax.dynamic_update_slice(acc, lax.dynamic_slice(acc, at, d.shape) + d, at)

    acc = lax.fori_loop(0, kh * kw, add, jnp.zeros((a, h + 2 * ph, w + 2 * pw, b), dtype))
    return acc[:, ph : ph + h, pw : pw + w]
