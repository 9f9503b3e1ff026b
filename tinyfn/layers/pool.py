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


def _pool_args(x, window, stride, padding, op="max_pool2d"):
    window = _checks.int_pair("window", window, minimum=1)
    stride = window if stride is None else _checks.int_pair("stride", stride, minimum=1)
    padding = _checks.int_pair("padding", padding, minimum=0)
    if any(2 * p > k for p, k in zip(padding, window)):
        raise ValueError(f"{op}: padding {padding} must be at most half of window {window}")
    if x is not None:
        x = _checks.float_array("x", x, ndim=4, layout="(N, C, H, W)")
        _check_window(op, x.shape[2:], window, padding)
    return x, window, stride, padding


def _check_window(op, hw, window, padding):
    for n, k, p, axis in zip(hw, window, padding, ("height", "width")):
        if k > n + 2 * p:
            raise ValueError(f"{op}: window {tuple(window)} is larger than the padded input ({axis} {n} + 2*{p})")


def _first_max(a, b):
    """Reduction of (value, flat index) pairs: the larger value, NaN above all, the lower index on ties."""
    (va, ia), (vb, ib) = a, b
    na, nb = jnp.isnan(va), jnp.isnan(vb)
    take_b = (nb & ~na) | (~na & ~nb & (vb > va)) | (((va == vb) | (na & nb)) & (ib < ia))
    return jnp.where(take_b, vb, va), jnp.where(take_b, ib, ia)


def _pool_with_switches(x, window, stride, padding):
    """Maxima ``(N, C, Ho, Wo)`` and their flat indices ``h * W + w`` (int32), in one variadic reduce-window.

    XLA never fuses a reduce-window into its consumers, so the pooled map is
    computed once and not recomputed inside every later slice that reads it.
    """
    h, w = x.shape[2:]
    flat = lax.broadcasted_iota(jnp.int32, (h, w), 0) * w + lax.broadcasted_iota(jnp.int32, (h, w), 1)
    inits = (jnp.array(-jnp.inf, x.dtype), jnp.array(jnp.iinfo(jnp.int32).max, jnp.int32))
    pads = ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1]))
    return lax.reduce_window((x, jnp.broadcast_to(flat, x.shape)), inits, _first_max, (1, 1, *window), (1, 1, *stride), pads)


def _switches_to_code(switches, window, stride, padding, in_w):
    """Flat input indices to window-local taps ``i * kw + j``."""
    ho, wo = switches.shape[2:]
    rows = switches // in_w - (jnp.arange(ho, dtype=jnp.int32)[None, None, :, None] * stride[0] - padding[0])
    cols = switches % in_w - (jnp.arange(wo, dtype=jnp.int32)[None, None, None, :] * stride[1] - padding[1])
    return rows * window[1] + cols


def _route_back(g, code, window, stride, padding, in_hw):
    """Send each ``g`` to the input position its window's maximum came from (sums where windows overlap)."""
    kw = window[1]
    dx = None
    for t in range(window[0] * kw):
        part = _untap(jnp.where(code == t, g, jnp.zeros((), g.dtype)), t // kw, t % kw, in_hw, stride, padding)
        dx = part if dx is None else dx + part
    return dx


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool(x, window, stride, padding, in_hw):
    return _pool_with_switches(x, window, stride, padding)


def _max_pool_fwd(x, window, stride, padding, in_hw):
    y, switches = _pool_with_switches(x, window, stride, padding)
    return (y, switches), switches


def _max_pool_bwd(window, stride, padding, in_hw, switches, cotangents):
    g, _ = cotangents  # the switches are integers: no cotangent
    code = _switches_to_code(switches, window, stride, padding, in_hw[1])
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
    return _max_pool(x, window, stride, padding, x.shape[2:])


def _unpool(y, switches, hw):
    n, c = y.shape[:2]
    h, w = hw
    flat = jnp.zeros((n * c, h * w), y.dtype)
    rows = jnp.arange(n * c)[:, None]
    # Out-of-range switches are dropped, as a scatter with mode="drop".
    return flat.at[rows, switches.reshape(n * c, -1)].add(y.reshape(n * c, -1), mode="drop").reshape(n, c, h, w)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _max_unpool(y, switches, hw):
    return _unpool(y, switches, hw)


def _max_unpool_fwd(y, switches, hw):
    return _unpool(y, switches, hw), switches


def _max_unpool_bwd(hw, switches, g):
    n, c = g.shape[:2]
    # Unpooling is z = Sᵀ y (S pooling's selection matrix), so by Law 1: dy = S g, a gather at the switches.
    dy = jnp.take_along_axis(g.reshape(n * c, -1), switches.reshape(n * c, -1), axis=1, mode="fill", fill_value=0)
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
    _, window, stride, padding = _pool_args(None, window, stride, padding, "MaxPool2D")

    def init(key, input_shape):
        n, c, h, w = _check_shape("MaxPool2D", input_shape, 4, "(N, C, H, W)")
        _check_window("MaxPool2D", (h, w), window, padding)
        return (n, c, *conv_output_size((h, w), window, stride, padding)), {}

    def apply(params, x, *, key=None, train=False):
        return max_pool2d(x, window, stride=stride, padding=padding)

    return Layer(init, apply, "MaxPool2D", MappingProxyType({"window": window, "stride": stride, "padding": padding}))
