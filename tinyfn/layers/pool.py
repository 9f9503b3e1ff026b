"""Max-pooling with switches, and max-unpooling, NCHW.

Max-pooling routes each window's largest input to the output; the
*switches* record where it came from. Its gradient routes ``g`` back along the
same switches, and unpooling (Zeiler & Fergus's DeconvNet) is that same
routing applied to a signal: unpooling *is* the transpose of pooling's routing.

Switches follow PyTorch's ``return_indices`` convention: int32, shaped like
the output, holding the flat index ``h * W + w`` of the maximum inside its
``(H, W)`` input plane. Ties go to the first maximum in row-major window
order (as XLA and PyTorch do); NaN propagates.
"""

from __future__ import annotations

from functools import partial
from types import MappingProxyType

import jax
import jax.numpy as jnp
from jax import lax

from tinyfn import _checks
from tinyfn.layers.base import Layer, _check_shape
from tinyfn.layers.conv import _untap, conv_output_size

__all__ = ["max_pool2d", "max_pool2d_with_switches", "max_unpool2d", "MaxPool2D"]


def _pool_args(x, window, stride, padding, op="max_pool2d", *, layer=False):
    window = _checks.int_pair("window", window, minimum=1)
    stride = window if stride is None else _checks.int_pair("stride", stride, minimum=1)
    padding = _checks.int_pair("padding", padding, minimum=0)
    if any(2 * p > k for p, k in zip(padding, window)):
        raise ValueError(f"{op}: padding {padding} must be at most half of window {window}")
    if not layer:  # a layer checks its input shape at init instead
        x = _checks.float_array("x", x, ndim=4, layout="(N, C, H, W)")
        _check_window(op, x.shape[2:], window, padding)
    return x, window, stride, padding


def _check_window(op, hw, window, padding):
    for n, k, p, axis in zip(hw, window, padding, ("height", "width")):
        if k > n + 2 * p:
            raise ValueError(f"{op}: window {tuple(window)} is larger than the padded input ({axis} {n} + 2*{p})")


def _argmax_code(x, window, stride, padding):
    """Pooled maxima ``(N, C, Ho, Wo)`` and the window-local tap ``i * kw + j`` of each (int32).

    A loop over the window's taps keeps the running maximum and where it came from; as loop
    outputs both are computed once (XLA would otherwise recompute them inside every consumer).
    The loop runs in the convolution kernels' layout ``(C, H, W, N)``, so that the layout
    changes between them cancel.
    """
    (kh, kw), (sh, sw) = window, stride
    out_hw = conv_output_size(x.shape[2:], window, stride, padding)
    x = x.transpose(1, 2, 3, 0)
    ph, pw = padding
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=-jnp.inf) if ph or pw else x
    c, n = x.shape[0], x.shape[3]
    span = ((out_hw[0] - 1) * sh + 1, (out_hw[1] - 1) * sw + 1)

    def tap(t):
        return lax.dynamic_slice(xp, (0, t // kw, t % kw, 0), (c, *span, n))[:, ::sh, ::sw]

    def keep_max(t, carry):
        best, code = carry
        new = tap(t)
        take = (new > best) | (jnp.isnan(new) & ~jnp.isnan(best))  # strict: the first maximum wins
        return jnp.where(take, new, best), jnp.where(take, t, code)

    first = tap(0)
    best, code = lax.fori_loop(1, kh * kw, keep_max, (first, jnp.zeros(first.shape, jnp.int32)))
    return best.transpose(3, 0, 1, 2), code.transpose(3, 0, 1, 2)


def _route_back(g, code, window, stride, padding, in_hw):
    """Send each ``g`` to the input position its window's maximum came from (sums where windows overlap)."""
    (kh, kw), (h, w) = window, in_hw
    n, c, ho, wo = g.shape
    if stride == window and padding == (0, 0):  # windows tile the input: one select, no scatter
        # in the (C, H, W, N) layout of the convolution kernels, as in the forward loop
        gc, cc = g.transpose(1, 2, 3, 0)[:, :, None, :, None], code.transpose(1, 2, 3, 0)[:, :, None, :, None]
        tap = jnp.arange(kh * kw, dtype=jnp.int32).reshape(1, 1, kh, 1, kw, 1)
        dx = jnp.where(cc == tap, gc, jnp.zeros((), g.dtype)).reshape(c, ho * kh, wo * kw, n)
        dx = jnp.pad(dx, ((0, 0), (0, h - ho * kh), (0, w - wo * kw), (0, 0)))  # rows/columns no window covers
        return dx.transpose(3, 0, 1, 2)
    dx = None
    for t in range(kh * kw):
        part = _untap(jnp.where(code == t, g, jnp.zeros((), g.dtype)), t // kw, t % kw, in_hw, stride, padding)
        dx = part if dx is None else dx + part
    return dx


def _code_to_switches(code, window, stride, padding, in_w):
    """Window-local taps to PyTorch-style flat indices ``h * W + w`` in the input plane."""
    ho, wo = code.shape[2:]
    kw = window[1]
    rows = jnp.arange(ho, dtype=jnp.int32)[None, None, :, None] * stride[0] - padding[0] + code // kw
    cols = jnp.arange(wo, dtype=jnp.int32)[None, None, None, :] * stride[1] - padding[1] + code % kw
    return rows * in_w + cols


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool(x, window, stride, padding, in_hw):
    return _argmax_code(x, window, stride, padding)


def _max_pool_fwd(x, window, stride, padding, in_hw):
    y, code = _argmax_code(x, window, stride, padding)
    return (y, code), code


def _max_pool_bwd(window, stride, padding, in_hw, code, cotangents):
    g, _ = cotangents  # the switches are integers: no cotangent
    # Routing is linear, y = S x with S a 0/1 selection matrix, so by Law 1: dx = Sᵀ g.
    return (_route_back(g, code, window, stride, padding, in_hw),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool2d(x, window=2, *, stride=None, padding=0):
    """2-D max-pooling (PyTorch's ``F.max_pool2d``; ``stride`` defaults to ``window``).

    Args:
      x: ``(N, C, H, W)``.
      window: int or ``(kh, kw)``.
      stride: int, pair or ``None`` (= ``window``).
      padding: int or pair, at most half the window; padded positions never win.

    Returns:
      ``(N, C, Ho, Wo)``, ``Ho = floor((H + 2 ph - kh) / sh) + 1``.

    Backward (handwritten): each ``g`` goes to its window's maximum (summed
    where overlapping windows share one).
    """
    x, window, stride, padding = _pool_args(x, window, stride, padding)
    return _max_pool(x, window, stride, padding, x.shape[2:])[0]


def max_pool2d_with_switches(x, window=2, *, stride=None, padding=0):
    """Max-pooling that also returns its switches: ``(y, switches)``.

    ``switches`` is int32 shaped like ``y``: the flat index ``h * W + w`` of
    each maximum in its input plane (PyTorch's ``return_indices=True``). Feed it
    to ``max_unpool2d`` to put a signal back where the maxima were.
    """
    x, window, stride, padding = _pool_args(x, window, stride, padding, "max_pool2d_with_switches")
    y, code = _max_pool(x, window, stride, padding, x.shape[2:])
    return y, _code_to_switches(code, window, stride, padding, x.shape[3])


def _unpool(y, switches, hw):
    n, c, ho, wo = y.shape
    h, w = hw
    flat = jnp.zeros((n * c, h * w), y.dtype)
    rows = jnp.arange(n * c)[:, None]
    # Out-of-range switches are dropped, as a scatter with mode="drop".
    return flat.at[rows, switches.reshape(n * c, ho * wo)].add(y.reshape(n * c, ho * wo), mode="drop").reshape(n, c, h, w)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _max_unpool(y, switches, hw):
    return _unpool(y, switches, hw)


def _max_unpool_fwd(y, switches, hw):
    return _unpool(y, switches, hw), switches


def _max_unpool_bwd(hw, switches, g):
    n, c = g.shape[:2]
    # Unpooling is z = Sᵀ y (S pooling's selection matrix), so by Law 1: dy = S g, a gather at the switches.
    rows_g, rows_s = g.reshape(n * c, g.shape[2] * g.shape[3]), switches.reshape(n * c, switches.shape[2] * switches.shape[3])
    dy = jnp.take_along_axis(rows_g, rows_s, axis=1, mode="fill", fill_value=0)
    return dy.reshape(switches.shape), None


_max_unpool.defvjp(_max_unpool_fwd, _max_unpool_bwd)


def max_unpool2d(y, switches, output_size):
    """Put each value of ``y`` at its switch in a zero ``(N, C, H, W)``; the inverse routing of max-pooling.

    Args:
      y: ``(N, C, Ho, Wo)``.
      switches: integer array shaped like ``y``, flat indices ``h * W + w`` (from
        ``max_pool2d_with_switches`` or PyTorch's ``return_indices``).
      output_size: ``(H, W)`` or the full ``(N, C, H, W)``.

    Where several switches point at one position (overlapping windows,
    ``stride < window``) their values are **summed**, which makes unpooling
    exactly the transpose of max-pooling's routing (and equal to its gradient).
    PyTorch's ``F.max_unpool2d`` instead keeps one of them; for non-overlapping
    windows the two agree. Switches outside ``[0, H*W)`` are dropped.

    Backward (handwritten): ``dy = g`` gathered at the switches.
    """
    y = _checks.float_array("y", y, ndim=4, layout="(N, C, Ho, Wo)")
    if not hasattr(switches, "dtype"):
        switches = jnp.asarray(switches)
    if not jnp.issubdtype(switches.dtype, jnp.integer):
        raise TypeError(f"max_unpool2d: switches must have an integer dtype, got {switches.dtype}")
    if tuple(switches.shape) != tuple(y.shape):
        raise ValueError(f"max_unpool2d: switches has shape {tuple(switches.shape)}, expected y's shape {tuple(y.shape)}")
    size = tuple(output_size)
    if len(size) == 4:
        if tuple(size[:2]) != tuple(y.shape[:2]):
            raise ValueError(f"max_unpool2d: output_size {size} does not match y's (N, C) = {tuple(y.shape[:2])}")
        size = size[2:]
    hw = _checks.int_pair("output_size", size, minimum=1)
    return _max_unpool(y, switches.astype(jnp.int32), hw)


def MaxPool2D(window=2, stride=None, padding=0) -> Layer:
    """Max-pooling layer (no params); ``stride`` defaults to ``window``. See ``max_pool2d``."""
    _, window, stride, padding = _pool_args(None, window, stride, padding, "MaxPool2D", layer=True)

    def init(key, input_shape):
        n, c, h, w = _check_shape("MaxPool2D", input_shape, 4, "(N, C, H, W)")
        _checks.not_channels_last((n, c, h, w), window, op="MaxPool2D")
        _check_window("MaxPool2D", (h, w), window, padding)
        return (n, c, *conv_output_size((h, w), window, stride, padding)), {}

    def apply(params, x, *, key=None, train=False):
        _checks.layer_params(init, params, x, op="MaxPool2D")
        return max_pool2d(x, window, stride=stride, padding=padding)

    return Layer(init, apply, "MaxPool2D", MappingProxyType({"window": window, "stride": stride, "padding": padding}))
