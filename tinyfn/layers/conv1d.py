"""1-D convolution on ``(N, C, L)``: ``conv2d`` on a height-1 image, so it inherits conv2d's rules.

``x (N, C, L)`` is viewed as ``(N, C, 1, L)`` and ``w (O, I, K)`` as ``(O, I, 1, K)``; the stride, padding and
dilation act on the width alone. Those views are reshapes (linear maps moving no numbers), and the convolution is
``conv2d`` with its handwritten rules (``dX* = W*ᵀ g``, ``dW = g X*ᵀ``). A dilation ``d`` spreads the ``K`` taps
``d`` apart: the filter is scattered into a zero filter of ``d (K - 1) + 1`` taps (a linear map of ``w``, whose
transpose gathers the taps back) and convolved as usual. PyTorch's ``nn.Conv1d`` semantics and weight layout.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from tinyfn import _checks, initializers
from tinyfn.layers import conv, kernels
from tinyfn.layers.base import Layer, make_layer
from tinyfn.layers.spec import register_layer

__all__ = ["conv1d", "Conv1D", "conv1d_output_size"]


def conv1d_output_size(length: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """``floor((L + 2 p - d (K - 1) - 1) / s) + 1``, as ``nn.Conv1d``."""
    return (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _dilate(w, dilation):
    return _plain_dilate(w, dilation)


def _plain_dilate(w, dilation):
    """``w (..., K)`` with ``dilation - 1`` zeros between its taps: ``(..., d (K - 1) + 1)``."""
    k = w.shape[-1]
    return jnp.zeros((*w.shape[:-1], dilation * (k - 1) + 1), w.dtype).at[..., ::dilation].set(w)


def _dilate_fwd(w, dilation):  # the plain forward, so that forward mode runs through it
    return _plain_dilate(w, dilation), None


def _dilate_bwd(dilation, res, g):
    # Law 1: W_d = A W with A the scatter of the taps to every d-th place  =>  dL/dW = Aᵀ dL/dW_d, the gather
    return (g[..., ::dilation],)


_dilate.defvjp(_dilate_fwd, _dilate_bwd)


def _int(name, value, minimum, op="conv1d"):
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    return _checks.int_pair(name, value, minimum=minimum, op=op)[0]


def _conv1d_args(x, w, b, stride, padding, dilation):
    op = "conv1d"
    stride, padding, dilation = _int("stride", stride, 1), _int("padding", padding, 0), _int("dilation", dilation, 1)
    x = _checks.float_array("x", x, ndim=3, layout="(N, C, L)", op=op)
    w = _checks.float_array("w", w, ndim=3, layout="(out_channels, in_channels, K)", empty_batch=False, op=op)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"{op}: x has {x.shape[1]} channels (shape {tuple(x.shape)}) but w expects {w.shape[1]} "
            f"(shape {tuple(w.shape)}, laid out (out_channels, in_channels, K))"
        )
    span = dilation * (w.shape[2] - 1) + 1
    if span > x.shape[2] + 2 * padding:
        raise ValueError(
            f"{op}: the dilated kernel spans {span} (kernel_size {w.shape[2]}, dilation {dilation}), more than the "
            f"padded input ({x.shape[2]} + 2*{padding}); expected a span <= length + 2*padding"
        )
    return x, w, b, stride, padding, dilation


def conv1d(x, w, b=None, *, stride=1, padding=0, dilation=1, formulation=None, chunk_bytes=None):
    """1-D convolution (cross-correlation, PyTorch's ``F.conv1d``).

    Args:
      x: ``(N, C, L)``.
      w: ``(O, C, K)``.
      b: ``(O,)`` or ``None``.
      stride, padding, dilation: ints (>= 1, >= 0, >= 1); zeros padded on both ends.
      formulation, chunk_bytes: as in ``conv2d``.

    Returns:
      ``(N, O, Lo)``, ``Lo = floor((L + 2 p - d (K - 1) - 1) / s) + 1``.

    Backward (handwritten, conv2d's): ``dx = W*ᵀ g``, ``dw = g X*ᵀ`` (gathered back from the dilated taps),
    ``db = Σ g``.
    """
    x, w, b, stride, padding, dilation = _conv1d_args(x, w, b, stride, padding, dilation)
    w4 = (w if dilation == 1 else _dilate(w, dilation))[:, :, None, :]
    x4, w4, b, s2, p2 = conv.conv2d_args("conv1d", x[:, :, None, :], w4, b, (1, stride), (0, padding))
    how = kernels.plan("conv1d", formulation, chunk_bytes, (x4, w4), w4.shape)
    return conv._conv2d(x4, w4, b, s2, p2, how)[:, :, 0, :]


def Conv1D(
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    use_bias: bool = True,
    w_init="he_normal",
    dtype=jnp.float32,
    formulation=None,
) -> Layer:
    """1-D convolution layer (``torch.nn.Conv1d``) with params ``{"w": (out, in, K), "b": (out,)}``.

    ``w`` is drawn by ``w_init`` with ``fan_in = in * K`` (He normal by default), ``b`` starts at zero. Input
    ``(N, in, L)``, output ``(N, out_channels, Lo)`` as in ``conv1d``.
    """
    op = "Conv1D"
    cfg = {
        "out_channels": _checks.positive_int("out_channels", out_channels, op=op),
        "kernel_size": _int("kernel_size", kernel_size, 1, op),
        "stride": _int("stride", stride, 1, op),
        "padding": _int("padding", padding, 0, op),
        "dilation": _int("dilation", dilation, 1, op),
    }
    kernels.check_options(op, formulation, None)
    o, k, s, p, d = cfg.values()
    w_init = initializers.get(w_init)

    def init(key, input_shape):
        n, c, length = _checks.input_shape(input_shape, ndim=3, layout="(N, C, L)", op=op)
        if d * (k - 1) + 1 > length + 2 * p:
            raise ValueError(
                f"{op}: kernel_size {k} with dilation {d} spans {d * (k - 1) + 1}, more than the padded input "
                f"({length} + 2*{p}) of input_shape {tuple(input_shape)}"
            )
        params = {"w": w_init(key, (o, c, k), c * k, o * k, dtype)}
        if use_bias:
            params["b"] = jnp.zeros((o,), dtype)
        return (n, o, conv1d_output_size(length, k, s, p, d)), params

    def apply(params, x, *, key=None, train=False):
        return conv1d(x, params["w"], params.get("b"), stride=s, padding=p, dilation=d, formulation=formulation)

    options = {"formulation": formulation} if formulation is not None else {}
    return make_layer(op, init, apply, config={**cfg, "use_bias": use_bias, **options})


register_layer("Conv1D", Conv1D)
