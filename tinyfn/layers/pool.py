"""Max-pooling with switches, and max-unpooling, NCHW.

Max-pooling routes each window's largest input to the output; the
*switches* record where it came from. Its gradient routes ``g`` back along the
same switches, and unpooling (Zeiler & Fergus's DeconvNet) is that same
routing applied to a signal: unpooling *is* the transpose of pooling's routing.

Switches follow PyTorch's ``return_indices`` convention: int32, shaped like
the output, holding the flat index ``h * W + w`` of the maximum inside its
``(H, W)`` input plane. Ties go to the first maximum in row-major window
order (as XLA and PyTorch do); NaN propagates; padding never wins. Ties are
decided on the float values as computed: in float32, two inputs that are equal
in exact arithmetic (say two conv outputs over the same pixels, summed in a
different order) can come out one ulp apart, and then the larger one wins, not
the first.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from tinyfn import _checks
from tinyfn.layers import kernels
from tinyfn.layers.base import Layer, make_layer
from tinyfn.layers.kernels import conv_output_size

__all__ = ["max_pool2d", "max_pool2d_with_switches", "max_unpool2d", "MaxPool2D"]


def _pool_args(op, window, stride, padding, x=None):
    """The checked ``(x, window, stride, padding)``; ``x`` (and the geometry) only when given."""
    window, stride, padding = kernels.pool_args(op, window, stride, padding)
    if x is not None:
        x = _checks.float_array("x", x, ndim=4, layout="(N, C, H, W)", op=op)
        _checks.window_geometry(op, x.shape[2:], window, stride, padding, name="window")
    return x, window, stride, padding


def _route_back(g, code, window, stride, padding, in_hw):
    """``Sᵀ g`` (a name of its own, so tests can swap in a marker rule)."""
    return kernels.route_back(g, code, window, stride, padding, in_hw)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _max_pool(x, window, stride, padding, in_hw, how):
    return kernels.pool_argmax(x, window, stride, padding, how)


def _max_pool_fwd(x, window, stride, padding, in_hw, how):
    y, code = kernels.pool_argmax(x, window, stride, padding, how)
    return (y, code), code


def _max_pool_bwd(window, stride, padding, in_hw, how, code, cotangents):
    g, _ = cotangents  # the switches are integers: no cotangent
    # Routing is linear, y = S x with S a 0/1 selection matrix, so by Law 1: dx = Sᵀ g.
    return (_route_back(g, code, window, stride, padding, in_hw),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def _pool(op, x, window, stride, padding, formulation):
    x, window, stride, padding = _pool_args(op, window, stride, padding, x)
    how = kernels.plan(op, formulation, None, (x,))
    return _max_pool(x, window, stride, padding, x.shape[2:], how), (window, stride, padding)


def max_pool2d(x, window=2, *, stride=None, padding=0, formulation=None):
    """2-D max-pooling (PyTorch's ``F.max_pool2d``; ``stride`` defaults to ``window``).

    Args:
      x: ``(N, C, H, W)``.
      window: int or ``(kh, kw)``.
      stride: int, pair or ``None`` (= ``window``).
      padding: int or pair, at most half the window; padded positions never win.
      formulation: how the maxima are found: ``"im2col"`` (a loop over the window's taps in the
        conv kernels' layout: fast on CPU), ``"xla"`` (``reduce_window`` and equality masks, no
        loop: for GPU/TPU), ``"direct"`` (a running maximum over the taps, unrolled), or ``None``:
        ``tinyfn.layers.formulation(...)``'s, else the backend's. All give the same results; the
        gradient's routing is loop-free in each.

    Returns:
      ``(N, C, Ho, Wo)``, ``Ho = floor((H + 2 ph - kh) / sh) + 1``.

    Backward (handwritten): each ``g`` goes to its window's maximum (summed
    where overlapping windows share one); ties go to the first maximum.
    """
    return _pool("max_pool2d", x, window, stride, padding, formulation)[0][0]


def max_pool2d_with_switches(x, window=2, *, stride=None, padding=0, formulation=None):
    """Max-pooling that also returns its switches: ``(y, switches)``.

    ``switches`` is int32 shaped like ``y``: the flat index ``h * W + w`` of
    each maximum in its input plane (PyTorch's ``return_indices=True``), never a
    padded position (in an all ``-inf`` window, the first real one). Feed it to
    ``max_unpool2d`` to put a signal back where the maxima were. Arguments as in
    ``max_pool2d``.
    """
    (y, code), (window, stride, padding) = _pool("max_pool2d_with_switches", x, window, stride, padding, formulation)
    return y, kernels.code_to_switches(code, window, stride, padding, x.shape[3])


def _unpool(y, switches, hw):
    n, c, ho, wo = y.shape
    h, w = hw
    flat = jnp.zeros((n * c, h * w), y.dtype)
    rows = jnp.arange(n * c)[:, None]
    # Out-of-range switches (negative ones were moved past the end) are dropped, as a scatter with mode="drop".
    return (
        flat.at[rows, switches.reshape(n * c, ho * wo)].add(y.reshape(n * c, ho * wo), mode="drop").reshape(n, c, h, w)
    )


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _max_unpool(y, switches, hw):
    return _unpool(y, switches, hw)


def _max_unpool_fwd(y, switches, hw):
    return _unpool(y, switches, hw), switches


def _max_unpool_bwd(hw, switches, g):
    n, c = g.shape[:2]
    # Unpooling is z = Sᵀ y (S pooling's selection matrix), so by Law 1: dy = S g, a gather at the switches.
    rows_g, rows_s = (
        g.reshape(n * c, g.shape[2] * g.shape[3]),
        switches.reshape(n * c, switches.shape[2] * switches.shape[3]),
    )
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
    windows the two agree. Switches outside ``[0, H*W)`` (negative ones included) are
    dropped: they put nothing anywhere, and their gradient is zero.

    Backward (handwritten): ``dy = g`` gathered at the switches.
    """
    y = _checks.float_array("y", y, ndim=4, layout="(N, C, Ho, Wo)", op="max_unpool2d")
    if not hasattr(switches, "dtype"):
        switches = jnp.asarray(switches)
    if not jnp.issubdtype(switches.dtype, jnp.integer):
        raise TypeError(f"max_unpool2d: switches must have an integer dtype, got {switches.dtype}")
    if tuple(switches.shape) != tuple(y.shape):
        raise ValueError(
            f"max_unpool2d: switches has shape {tuple(switches.shape)}, expected y's shape {tuple(y.shape)}"
        )
    size = tuple(output_size)
    if len(size) == 4:
        if tuple(size[:2]) != tuple(y.shape[:2]):
            raise ValueError(f"max_unpool2d: output_size {size} does not match y's (N, C) = {tuple(y.shape[:2])}")
        size = size[2:]
    hw = _checks.int_pair("output_size", size, minimum=1, op="max_unpool2d")
    switches = switches.astype(jnp.int32)
    # A negative index would count from the end in a scatter or gather: send it past the end, where it is dropped.
    switches = jnp.where(switches < 0, hw[0] * hw[1], switches)
    return _max_unpool(y, switches, hw)


def MaxPool2D(window=2, stride=None, padding=0, *, formulation=None) -> Layer:
    """Max-pooling layer (no params); ``stride`` defaults to ``window``. See ``max_pool2d``."""
    _, window, stride, padding = _pool_args("MaxPool2D", window, stride, padding)
    kernels.check_options("MaxPool2D", formulation, None)

    def init(key, input_shape):
        n, c, h, w = _checks.input_shape(input_shape, ndim=4, layout="(N, C, H, W)", op="MaxPool2D")
        _checks.not_channels_last((n, c, h, w), window, op="MaxPool2D")
        _checks.window_geometry("MaxPool2D", (h, w), window, stride, padding, name="window")
        return (n, c, *conv_output_size((h, w), window, stride, padding)), {}

    def apply(params, x, *, key=None, train=False):
        return max_pool2d(x, window, stride=stride, padding=padding, formulation=formulation)

    config = {"window": window, "stride": stride, "padding": padding}
    if formulation is not None:
        config["formulation"] = formulation
    return make_layer("MaxPool2D", init, apply, config=config)
