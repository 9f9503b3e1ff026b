"""Average pooling (windowed and global), NCHW, with handwritten backward rules.

Average pooling is linear, ``y = A x`` with a constant matrix ``A`` whose row
for an output holds ``1/d`` at the inputs of its window (``d`` the divisor), so
by Law 1 its backward is ``dx = Aᵀ g``: each ``g / d`` spread back over its window
(summed where windows overlap).

Precision: the window sums and means are accumulated in float32 for float16 and
bfloat16 inputs (as PyTorch does) and cast back: a float16 average of 30000s is
30000, not the ``inf`` of a float16 sum of four of them.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from tinyfn import _checks
from tinyfn.layers.base import Layer, make_layer
from tinyfn.layers.conv import conv_output_size
from tinyfn.layers.kernels.geometry import pool_args as _pool_args

__all__ = ["avg_pool2d", "global_avg_pool2d", "AvgPool2D", "GlobalAvgPool2D"]


def _wide(a):
    """``a`` in its accumulation dtype: float32 for float16/bfloat16 (float64 stays float64)."""
    return a.astype(jnp.promote_types(a.dtype, jnp.float32))


def _window_sum(x, window, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = window, stride, padding
    # a Python 0.0 init (concrete under jit): lax takes its windowed-sum primitive, whose batching rule
    # forward-over-reverse under jit needs (with a traced zero it takes the generic reduce_window, which fails there)
    return lax.reduce_window(x, 0.0, lax.add, (1, 1, kh, kw), (1, 1, sh, sw), ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _divisor(hw, window, stride, padding, count_include_pad, dtype):
    """``(1, 1, Ho, Wo)``: the window area, or the number of non-padded inputs in each window."""
    if count_include_pad:
        return jnp.asarray(window[0] * window[1], dtype)
    ones = jnp.ones((1, 1, *hw), dtype)
    return _window_sum(ones, window, stride, padding)


def _window_sum_transpose(g, window, stride, padding, hw):
    """``Sᵀ g`` for the window-sum ``S``: dilate ``g`` by the stride, pad by ``k - 1``, sum windows of ``k``, crop
    the padding."""
    (kh, kw), (sh, sw), (ph, pw), (h, w) = window, stride, padding, hw
    ho, wo = g.shape[2:]
    extra_h, extra_w = h + 2 * ph - ((ho - 1) * sh + kh), w + 2 * pw - ((wo - 1) * sw + kw)  # rows no window reaches
    zero = jnp.zeros((), g.dtype)
    gd = lax.pad(
        g, zero, ((0, 0, 0), (0, 0, 0), (kh - 1, kh - 1 + extra_h, sh - 1), (kw - 1, kw - 1 + extra_w, sw - 1))
    )
    full = lax.reduce_window(gd, 0.0, lax.add, (1, 1, kh, kw), (1, 1, 1, 1), "VALID")  # 0.0: as in _window_sum
    return full[:, :, ph : ph + h, pw : pw + w]


def _plain_avg_pool(x, window, stride, padding, count_include_pad):
    x32 = _wide(x)  # summed in float32 at least, cast back
    d = _divisor(x.shape[2:], window, stride, padding, count_include_pad, x32.dtype)
    return (_window_sum(x32, window, stride, padding) / d).astype(x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _avg_pool(x, window, stride, padding, count_include_pad):
    return _plain_avg_pool(x, window, stride, padding, count_include_pad)


def _avg_pool_fwd(
    x, window, stride, padding, count_include_pad
):  # the plain forward, so that forward mode runs through it
    return _plain_avg_pool(x, window, stride, padding, count_include_pad), x.shape[2:]


def _avg_pool_bwd(window, stride, padding, count_include_pad, hw, g):
    # Law 1: y = A x with A = diag(1/d) S (S the window sum)  =>  dx = Aᵀ g = Sᵀ (g / d)
    g32 = _wide(g)  # summed in float32 at least, cast back
    scaled = g32 / _divisor(hw, window, stride, padding, count_include_pad, g32.dtype)
    return (_window_sum_transpose(scaled, window, stride, padding, hw).astype(g.dtype),)


_avg_pool.defvjp(_avg_pool_fwd, _avg_pool_bwd)


def _check_fits(op, hw, window, padding):
    for n, k, p, axis in zip(hw, window, padding, ("height", "width")):
        if k > n + 2 * p:
            raise ValueError(f"{op}: window {tuple(window)} is larger than the padded input ({axis} {n} + 2*{p})")


def avg_pool2d(x, window=2, *, stride=None, padding=0, count_include_pad: bool = True):
    """2-D average pooling (PyTorch's ``F.avg_pool2d``; ``stride`` defaults to ``window``).

    Args:
      x: ``(N, C, H, W)``.
      window: int or ``(kh, kw)``; stride: int, pair or ``None`` (= ``window``);
      padding: int or pair, at most half the window, padded with zeros.
      count_include_pad: divide by the window area (``True``) or by the number of
        non-padded inputs in each window (``False``).

    Returns:
      ``(N, C, Ho, Wo)``, ``Ho = floor((H + 2 ph - kh) / sh) + 1``.

    Backward (handwritten, Law 1): ``g / d`` spread back over each window.
    """
    window, stride, padding = _pool_args("avg_pool2d", window, stride, padding)
    x = _checks.float_array("x", x, ndim=4, layout="(N, C, H, W)", op="avg_pool2d")
    _check_fits("avg_pool2d", x.shape[2:], window, padding)
    return _avg_pool(x, window, stride, padding, bool(count_include_pad))


def _plain_global_avg_pool(x):
    return jnp.mean(_wide(x), axis=(2, 3)).astype(x.dtype)  # summed in float32 at least, cast back


@jax.custom_vjp
def _global_avg_pool(x):
    return _plain_global_avg_pool(x)


def _global_avg_pool_fwd(x):  # the plain forward, so that forward mode runs through it
    return _plain_global_avg_pool(x), x.shape


def _global_avg_pool_bwd(shape, g):
    # Law 1: y = A x with A = (1/HW) [1 … 1] per plane  =>  dx = Aᵀ g = g / HW at every position
    h, w = shape[2:]
    return (jnp.broadcast_to((g / (h * w))[:, :, None, None], shape),)


_global_avg_pool.defvjp(_global_avg_pool_fwd, _global_avg_pool_bwd)


def global_avg_pool2d(x):
    """The mean of each ``(H, W)`` plane: ``(N, C, H, W) -> (N, C)``. Backward (handwritten): ``g / HW`` everywhere."""
    x = _checks.float_array("x", x, ndim=4, layout="(N, C, H, W)", op="global_avg_pool2d")
    return _global_avg_pool(x)


def AvgPool2D(window=2, stride=None, padding=0, count_include_pad: bool = True) -> Layer:
    """Average-pooling layer (no params); ``stride`` defaults to ``window``. See ``avg_pool2d``."""
    window, stride, padding = _pool_args("AvgPool2D", window, stride, padding)
    count_include_pad = bool(count_include_pad)

    def init(key, input_shape):
        n, c, h, w = _checks.input_shape(input_shape, ndim=4, layout="(N, C, H, W)", op="AvgPool2D")
        _check_fits("AvgPool2D", (h, w), window, padding)
        return (n, c, *conv_output_size((h, w), window, stride, padding)), {}

    def apply(params, x, *, key=None, train=False):
        return avg_pool2d(x, window, stride=stride, padding=padding, count_include_pad=count_include_pad)

    config = {"window": window, "stride": stride, "padding": padding, "count_include_pad": count_include_pad}
    return make_layer("AvgPool2D", init, apply, config=config)


def GlobalAvgPool2D() -> Layer:
    """Global average pooling ``(N, C, H, W) -> (N, C)`` (no params). See ``global_avg_pool2d``."""

    def init(key, input_shape):
        n, c, _, _ = _checks.input_shape(input_shape, ndim=4, layout="(N, C, H, W)", op="GlobalAvgPool2D")
        return (n, c), {}

    def apply(params, x, *, key=None, train=False):
        return global_avg_pool2d(x)

    return make_layer("GlobalAvgPool2D", init, apply)
