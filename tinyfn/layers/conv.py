"""2-D convolution and transposed convolution (deconvolution), NCHW: the ops, their rules, the layers.

Convolution is a linear map of the unrolled input, ``Y* = W* X*``, where ``W*``
is the sparse unrolled-filter matrix (``tinyfn.layers.conv_matrix`` builds it,
for teaching). The handwritten rules follow from the two matrix laws without
ever building ``W*``:

* ``dX* = W*ᵀ g``: the input gradient is a transposed convolution of ``g``;
* ``dW  = g X*ᵀ``: the weight gradient correlates ``g`` with the input patches;
* deconvolution's forward *is* ``W*ᵀ``, so its backward is a convolution.

Each product is evaluated by one of the formulations of
``tinyfn.layers.kernels`` (``"im2col"``, ``"xla"``, ``"direct"``), chosen per call
by ``formulation=``, by ``tinyfn.layers.formulation(...)``, or per backend.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from tinyfn import _checks, initializers
from tinyfn.layers import kernels, precision
from tinyfn.layers.base import Layer, make_layer
from tinyfn.layers.kernels import conv_output_size, deconv_output_size

__all__ = ["conv2d", "deconv2d", "Conv2D", "Deconv2D", "conv_output_size", "deconv_output_size"]


def _add_bias(y, b):
    return y if b is None else y + b[None, :, None, None]


def _conv_input_grad(g, w, stride, padding, in_hw, how, op="conv2d"):
    """``W*ᵀ g`` by ``how``'s formulation (a name of its own, so tests can swap in a marker rule)."""
    return kernels.conv_input_grad(g, w, stride, padding, in_hw, how, op=op)


# ----------------------------------------------------------------------------- conv2d


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _conv2d(x, w, b, stride, padding, how):
    return _add_bias(kernels.conv_forward(x, w, stride, padding, how), b)


def _conv2d_fwd(x, w, b, stride, padding, how):
    cols = kernels.unrolled(x, w.shape[2:], stride, padding, how)  # X*, kept for dW (im2col only)
    return _add_bias(kernels.conv_forward(x, w, stride, padding, how, cols), b), (x, cols, w, b)


def _conv2d_bwd(stride, padding, how, res, g):
    x, cols, w, b = res
    dx = _conv_input_grad(g, w, stride, padding, x.shape[2:], how)  # Law 1: Y* = W* X*  =>  dX* = W*ᵀ g
    dw = kernels.conv_weight_grad(
        x, g, stride, padding, w.shape[2:], how, cols
    )  # Law 2: Y = W X* (X* the im2col matrix)  =>  dW = g X*ᵀ
    db = None if b is None else g.sum(axis=(0, 2, 3))
    return dx, dw, db


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _conv_args(op, x, w, b, stride, padding, output_padding=None):
    """Shared checks of ``conv2d`` and (with ``output_padding``) ``deconv2d``; errors name ``op``."""
    transposed = output_padding is not None
    stride = _checks.int_pair("stride", stride, minimum=1, op=op)
    padding = _checks.int_pair("padding", padding, minimum=0, op=op)
    if transposed:
        output_padding = _checks.int_pair("output_padding", output_padding, minimum=0, op=op)
    w_layout = "(in_channels, out_channels, kh, kw)" if transposed else "(out_channels, in_channels, kh, kw)"
    x = _checks.float_array("x", x, ndim=4, layout="(N, C_in, H, W)" if transposed else "(N, C, H, W)", op=op)
    w = _checks.float_array("w", w, ndim=4, layout=w_layout, empty_batch=False, op=op)
    if b is not None:
        b = _checks.float_array("b", b, ndim=1, layout="(out_channels,)", empty_batch=False, op=op)
    _checks.same_dtype(op, x=x, w=w, b=b)
    c_in, c_out = (w.shape[0], w.shape[1]) if transposed else (w.shape[1], w.shape[0])
    if x.shape[1] != c_in:
        raise ValueError(
            f"{op}: x has {x.shape[1]} channels (shape {tuple(x.shape)}) but w expects {c_in} (shape {tuple(w.shape)}, "
            f"laid out {w_layout})"
        )
    if b is not None and b.shape[0] != c_out:
        raise ValueError(f"{op}: b has shape {tuple(b.shape)}, expected ({c_out},) to match w {tuple(w.shape)}")
    _checks.window_geometry(op, x.shape[2:], w.shape[2:], stride, padding, output_padding)
    return x, w, b, stride, padding, output_padding


def conv2d_args(op, x, w, b, stride, padding):
    """``conv2d``'s arguments checked, errors naming ``op``: ``(x, w, b, stride, padding)``."""
    return _conv_args(op, x, w, b, stride, padding)[:5]


def conv2d(x, w, b=None, *, stride=1, padding=0, formulation=None, chunk_bytes=None):
    """2-D convolution (cross-correlation, as in PyTorch's ``F.conv2d``).

    Args:
      x: input ``(N, C, H, W)``.
      w: filters ``(K, C, kh, kw)``.
      b: bias ``(K,)`` or ``None``.
      stride: int or ``(sh, sw)``, >= 1.
      padding: int or ``(ph, pw)``, >= 0; zeros on both sides.
      formulation: how the products ``W X*``, ``W*ᵀ g`` and ``g X*ᵀ`` are evaluated: ``"im2col"``
        (``X*`` built by a loop and kept for ``dW``; GEMMs: fast on CPU), ``"xla"`` (XLA's
        convolutions, no loop: fast on GPU/TPU), ``"direct"`` (unrolled multiply-adds: for one
        output channel), or ``None``: ``tinyfn.layers.formulation(...)``'s, else the backend's
        (``default_formulation``). All give the same numbers up to float rounding.
      chunk_bytes: ``im2col`` only: the largest ``X*`` built at once, in bytes; a larger one goes
        in batch chunks. ``None``: ``kernels.CHUNK_BYTES`` (32 MiB).

    Returns:
      ``(N, K, Ho, Wo)`` with ``Ho = floor((H + 2 ph - kh) / sh) + 1`` (likewise ``Wo``).

    Backward (handwritten): ``dx = W*ᵀ g`` (a transposed convolution, which is
    ``deconv2d(g, w)``), ``dw = g X*ᵀ``, ``db = Σ_{N,H,W} g``.
    """
    x, w, b, stride, padding = conv2d_args("conv2d", x, w, b, stride, padding)
    how = kernels.plan("conv2d", formulation, chunk_bytes, (x, w), w.shape)
    return _conv2d(x, w, b, stride, padding, how)


# ----------------------------------------------------------------------------- deconv2d


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _deconv2d(x, w, b, stride, padding, out_hw, how):
    return _add_bias(_conv_input_grad(x, w, stride, padding, out_hw, how, "deconv2d"), b)


def _deconv2d_fwd(x, w, b, stride, padding, out_hw, how):
    return _add_bias(_conv_input_grad(x, w, stride, padding, out_hw, how, "deconv2d"), b), (x, w, b)


def _deconv2d_bwd(stride, padding, out_hw, how, res, g):
    x, w, b = res
    dx = kernels.conv_forward(
        g, w, stride, padding, how, op="deconv2d"
    )  # Law 1: Y* = W*ᵀ X*  =>  dX* = (W*ᵀ)ᵀ g = W* g, a convolution
    dw = kernels.conv_weight_grad(
        g, x, stride, padding, w.shape[2:], how, op="deconv2d"
    )  # the conv weight gradient, g and x swapped
    db = None if b is None else g.sum(axis=(0, 2, 3))
    return dx, dw, db


_deconv2d.defvjp(_deconv2d_fwd, _deconv2d_bwd)


def deconv2d_args(op, x, w, b, stride, padding, output_padding):
    """``deconv2d``'s arguments checked, errors naming ``op``: ``(x, w, b, stride, padding, out_hw)``."""
    x, w, b, stride, padding, output_padding = _conv_args(op, x, w, b, stride, padding, output_padding)
    return x, w, b, stride, padding, deconv_output_size(x.shape[2:], w.shape[2:], stride, padding, output_padding)


def deconv2d(x, w, b=None, *, stride=1, padding=0, output_padding=0, formulation=None, chunk_bytes=None):
    """Transposed 2-D convolution (PyTorch's ``F.conv_transpose2d``): ``Y* = W*ᵀ X*``.

    Exactly the adjoint of ``conv2d`` in its input, ``<conv2d(u, w), v> ==
    <u, deconv2d(v, w)>``, so a convolution's own filters plug in unchanged.

    Args:
      x: input ``(N, C_in, H, W)``.
      w: filters ``(C_in, C_out, kh, kw)``: the layout of the ``conv2d`` that maps ``C_out -> C_in``.
      b: bias ``(C_out,)`` or ``None``.
      stride, padding: as in the matching ``conv2d``.
      output_padding: int or pair, ``0 <= output_padding < stride``; extra rows/columns at the
        bottom/right, choosing among the output sizes that the matching conv maps to ``(H, W)``.
      formulation, chunk_bytes: as in ``conv2d`` (``"xla"``: the transposed convolution by
        ``lhs_dilation`` with the kernel flipped and swapped; ``"im2col"``: a GEMM then col2im).

    Returns:
      ``(N, C_out, Ho, Wo)`` with ``Ho = (H - 1) sh - 2 ph + kh + output_padding`` (likewise ``Wo``).

    Backward (handwritten): ``dx = conv2d(g, w)``, ``dw`` the conv weight gradient with ``g`` as
    input and ``x`` as output gradient, ``db = Σ g``.
    """
    x, w, b, stride, padding, out_hw = deconv2d_args("deconv2d", x, w, b, stride, padding, output_padding)
    how = kernels.plan("deconv2d", formulation, chunk_bytes, (x, w), w.shape)
    return _deconv2d(x, w, b, stride, padding, out_hw, how)


# ----------------------------------------------------------------------------- layers


def _layer_config(
    name, out_channels, kernel_size, stride, padding, output_padding, formulation, chunk_bytes, compute_dtype
):
    """The checked constructor arguments of ``Conv2D`` (``output_padding=None``) and ``Deconv2D``:
    the geometry, and the evaluation options that were set."""
    config = {
        "out_channels": _checks.positive_int("out_channels", out_channels, op=name),
        "kernel_size": _checks.int_pair("kernel_size", kernel_size, minimum=1, op=name),
        "stride": _checks.int_pair("stride", stride, minimum=1, op=name),
        "padding": _checks.int_pair("padding", padding, minimum=0, op=name),
    }
    if output_padding is not None:
        config["output_padding"] = _checks.int_pair("output_padding", output_padding, minimum=0, op=name)
        _checks.window_geometry(
            name, None, config["kernel_size"], config["stride"], config["padding"], config["output_padding"]
        )
    kernels.check_options(name, formulation, chunk_bytes)
    options = {
        "formulation": formulation,
        "chunk_bytes": chunk_bytes,
        "compute_dtype": precision.check_compute_dtype(name, compute_dtype),
    }
    return config, {k: v for k, v in options.items() if v is not None}  # the options shown only when set


def Conv2D(
    out_channels: int,
    kernel_size,
    stride=1,
    padding=0,
    *,
    use_bias=True,
    w_init="he_normal",
    dtype=jnp.float32,
    formulation=None,
    chunk_bytes=None,
    compute_dtype=None,
) -> Layer:
    """Convolution layer with params ``{"w": (out, in, kh, kw), "b": (out,)}``.

    ``w`` is drawn by ``w_init`` with ``fan_in = in * kh * kw`` (He normal by
    default), ``b`` starts at zero. Input ``(N, in, H, W)``, output
    ``(N, out_channels, Ho, Wo)`` as in ``conv2d`` (``formulation``, ``chunk_bytes`` as there).
    ``compute_dtype`` (e.g. ``jnp.bfloat16``): params stay ``dtype``, the products and the output
    are in ``compute_dtype`` (see ``tinyfn.layers.precision``).
    """
    cfg, options = _layer_config(
        "Conv2D", out_channels, kernel_size, stride, padding, None, formulation, chunk_bytes, compute_dtype
    )
    out_channels, kernel, stride, padding = cfg["out_channels"], cfg["kernel_size"], cfg["stride"], cfg["padding"]
    compute_dtype = options.get("compute_dtype")
    w_init = initializers.get(w_init)

    def init(key, input_shape):
        n, c, h, w_ = _checks.input_shape(input_shape, ndim=4, layout="(N, C, H, W)", op="Conv2D")
        _checks.not_channels_last((n, c, h, w_), kernel, op="Conv2D")
        _checks.window_geometry("Conv2D", (h, w_), kernel, stride, padding)
        fan_in, fan_out = c * kernel[0] * kernel[1], out_channels * kernel[0] * kernel[1]
        params = {"w": w_init(key, (out_channels, c, *kernel), fan_in, fan_out, dtype)}
        if use_bias:
            params["b"] = jnp.zeros((out_channels,), dtype)
        return (n, out_channels, *conv_output_size((h, w_), kernel, stride, padding)), params

    def apply(params, x, *, key=None, train=False):
        x, w, b = precision.cast(compute_dtype, x, params["w"], params.get("b"))
        return conv2d(x, w, b, stride=stride, padding=padding, formulation=formulation, chunk_bytes=chunk_bytes)

    return make_layer("Conv2D", init, apply, config={**cfg, "use_bias": use_bias, **options})


def Deconv2D(
    out_channels: int,
    kernel_size,
    stride=1,
    padding=0,
    output_padding=0,
    *,
    use_bias=True,
    w_init="he_normal",
    dtype=jnp.float32,
    formulation=None,
    chunk_bytes=None,
    compute_dtype=None,
) -> Layer:
    """Transposed-convolution layer with params ``{"w": (in, out, kh, kw), "b": (out,)}``.

    ``w`` is drawn by ``w_init`` with ``fan_in = in * kh * kw / (sh * sw)``, the
    average number of inputs that feed one output; ``b`` starts at zero. Input
    ``(N, in, H, W)``, output ``(N, out_channels, Ho, Wo)`` as in ``deconv2d``;
    ``formulation``, ``chunk_bytes``, ``compute_dtype`` as in ``Conv2D``.
    """
    cfg, options = _layer_config(
        "Deconv2D", out_channels, kernel_size, stride, padding, output_padding, formulation, chunk_bytes, compute_dtype
    )
    out_channels, kernel, stride, padding = cfg["out_channels"], cfg["kernel_size"], cfg["stride"], cfg["padding"]
    output_padding, compute_dtype = cfg["output_padding"], options.get("compute_dtype")
    w_init = initializers.get(w_init)

    def init(key, input_shape):
        n, c, h, w_ = _checks.input_shape(input_shape, ndim=4, layout="(N, C, H, W)", op="Deconv2D")
        _checks.window_geometry("Deconv2D", (h, w_), kernel, stride, padding, output_padding)
        taps = kernel[0] * kernel[1]
        fan_in = max(1, c * taps // (stride[0] * stride[1]))
        params = {"w": w_init(key, (c, out_channels, *kernel), fan_in, out_channels * taps, dtype)}
        if use_bias:
            params["b"] = jnp.zeros((out_channels,), dtype)
        return (n, out_channels, *deconv_output_size((h, w_), kernel, stride, padding, output_padding)), params

    def apply(params, x, *, key=None, train=False):
        x, w, b = precision.cast(compute_dtype, x, params["w"], params.get("b"))
        kw = dict(
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            formulation=formulation,
            chunk_bytes=chunk_bytes,
        )
        return deconv2d(x, w, b, **kw)

    return make_layer("Deconv2D", init, apply, config={**cfg, "use_bias": use_bias, **options})
