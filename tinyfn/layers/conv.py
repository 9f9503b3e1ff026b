"""2-D convolution and transposed convolution (deconvolution), NCHW.

Convolution is a linear map of the unrolled input, ``Y* = W* X*``, where
``W*`` is the sparse unrolled-filter matrix (see ``tinyfn.layers.conv_matrix``
for the teaching version that builds it). The handwritten rules follow from the
two matrix laws without ever building ``W*``:

* ``dX* = W*ᵀ g``: the input gradient is a transposed convolution of ``g``;
* ``dW  = g X*ᵀ``: the weight gradient correlates ``g`` with the input patches;
* deconvolution's forward *is* ``W*ᵀ``, so its backward is a convolution.

All three are computed by the same three kernels below, each choosing its
formulation by shape: ``direct`` (one fused multiply-add per filter tap:
fastest with few channels, where XLA's convolution kernel is slow), XLA's own
correlation (``lax.conv_general_dilated``, for stride 1 or a forward pass
with many channels), and ``gemm`` (im2col: the taps stacked into one matrix
and a single matrix product, for strided gradients).
"""

from __future__ import annotations

from functools import partial
from types import MappingProxyType

import jax
import jax.numpy as jnp
from jax import lax

from tinyfn import _checks, initializers
from tinyfn.layers.base import Layer, _check_shape

__all__ = ["conv2d", "deconv2d", "Conv2D", "Deconv2D", "conv_output_size", "deconv_output_size"]


# ----------------------------------------------------------------------------- geometry


def conv_output_size(size, kernel, stride, padding):
    """``floor((size + 2 padding - kernel) / stride) + 1`` per spatial dimension."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))


def deconv_output_size(size, kernel, stride, padding, output_padding):
    """``(size - 1) stride - 2 padding + kernel + output_padding`` per spatial dimension."""
    return tuple((n - 1) * s - 2 * p + k + o for n, k, s, p, o in zip(size, kernel, stride, padding, output_padding))


def _check_conv_geometry(op, hw, kernel, padding):
    for n, k, p, axis in zip(hw, kernel, padding, ("height", "width")):
        if k > n + 2 * p:
            raise ValueError(
                f"{op}: kernel_size {tuple(kernel)} is larger than the padded input "
                f"({axis} {n} + 2*{p} = {n + 2 * p}); expected kernel <= input + 2*padding"
            )


def _check_output_padding(op, output_padding, stride):
    if any(o >= s for o, s in zip(output_padding, stride)):
        raise ValueError(f"{op}: output_padding {output_padding} must be smaller than stride {stride} in each dimension")


# ----------------------------------------------------------------------------- kernels
# x (N, C, H, W), w (K, C, kh, kw), g (N, K, Ho, Wo); stride/padding are int pairs.


def _taps(xp, kernel, out_hw, stride):
    """The strided view of the padded input under each filter tap ``(i, j)``, row-major:
    ``xp[:, :, i + stride*r, j + stride*c]`` for ``r < Ho, c < Wo``; each ``(N, C, Ho, Wo)``."""
    (kh, kw), (ho, wo), (sh, sw) = kernel, out_hw, stride
    n, c = xp.shape[:2]
    return [
        lax.slice(xp, (0, 0, i, j), (n, c, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1), (1, 1, sh, sw))
        for i in range(kh)
        for j in range(kw)
    ]


def _untap(c, i, j, in_hw, stride, padding):
    """Transpose of taking tap ``(i, j)`` from the padded input: scatter ``c (N, C, Ho, Wo)`` to rows
    ``i - p + stride*r`` and columns ``j - p + stride*c`` of a zero ``(N, C, H, W)`` (one ``lax.pad``)."""
    (h, w), (sh, sw), (ph, pw) = in_hw, stride, padding
    ho, wo = c.shape[2:]
    lo_h, lo_w = i - ph, j - pw
    return lax.pad(
        c,
        jnp.zeros((), c.dtype),
        ((0, 0, 0), (0, 0, 0), (lo_h, h - lo_h - (ho - 1) * sh - 1, sh - 1), (lo_w, w - lo_w - (wo - 1) * sw - 1, sw - 1)),
    )


def _pad(x, padding):
    ph, pw = padding
    return jnp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x


_DN = ("NCHW", "OIHW", "NCHW")


def _few_channels(c, k) -> bool:
    """XLA's convolution kernel is slow with few channels; there one fused multiply-add per tap wins."""
    return c * k <= 32


def _conv_forward(x, w, stride, padding):
    """``y[n,k] = Σ_{c,i,j} w[k,c,i,j] xp[n,c,i+s·r,j+s·q]``, i.e. ``Y* = W* X*``."""
    k, c, kh, kw = w.shape
    if not _few_channels(c, k):
        (ph, pw) = padding
        return lax.conv_general_dilated(x, w, stride, ((ph, ph), (pw, pw)), dimension_numbers=_DN)
    out_hw = conv_output_size(x.shape[2:], (kh, kw), stride, padding)
    y = None
    for t, tap in enumerate(_taps(_pad(x, padding), (kh, kw), out_hw, stride)):
        term = jnp.einsum("nchw,kc->nkhw", tap, w[:, :, t // kw, t % kw])
        y = term if y is None else y + term
    return y


def _conv_input_grad(g, w, stride, padding, in_hw):
    """``W*ᵀ g``: the transposed convolution of ``g (N, K, Ho, Wo)`` back to ``(N, C, H, W)``."""
    k, c, kh, kw = w.shape
    (ph, pw), (h, wd) = padding, in_hw
    if not _few_channels(c, k) and stride == (1, 1):
        # stride 1: a plain correlation of the zero-padded g with the flipped, transposed filters
        pads = ((kh - 1 - ph, h - g.shape[2] + ph), (kw - 1 - pw, wd - g.shape[3] + pw))
        return lax.conv_general_dilated(g, jnp.flip(w, (2, 3)).transpose(1, 0, 2, 3), (1, 1), pads, dimension_numbers=_DN)
    if _few_channels(c, k):
        parts = (jnp.einsum("nkhw,kc->nchw", g, w[:, :, t // kw, t % kw]) for t in range(kh * kw))
    else:
        n, _, ho, wo = g.shape
        dcols = jnp.einsum("nkl,kp->npl", g.reshape(n, k, ho * wo), w.reshape(k, c * kh * kw))
        dcols = dcols.reshape(n, c, kh * kw, ho, wo)
        parts = (dcols[:, :, t] for t in range(kh * kw))
    dx = None
    for t, part in enumerate(parts):
        placed = _untap(part, t // kw, t % kw, in_hw, stride, padding)
        dx = placed if dx is None else dx + placed
    return dx


def _conv_weight_grad(x, g, stride, padding, kernel):
    """``g X*ᵀ``: ``dw[k,c,i,j] = Σ_{n,r,q} g[n,k,r,q] xp[n,c,i+s·r,j+s·q]``."""
    n, c = x.shape[:2]
    k, (ho, wo) = g.shape[1], g.shape[2:]
    kh, kw = kernel
    if stride == (1, 1):
        # the same sum as a correlation of x with g over (n, r, q): batch and feature roles swapped
        (ph, pw) = padding
        return lax.conv_general_dilated(x, g, (1, 1), ((ph, ph), (pw, pw)), dimension_numbers=("CNHW", "IOHW", "CNHW"))
    cols = jnp.stack(_taps(_pad(x, padding), kernel, (ho, wo), stride), axis=2).reshape(n, c * kh * kw, ho * wo)
    return jnp.einsum("nkl,npl->kp", g.reshape(n, k, ho * wo), cols).reshape(k, c, kh, kw)


def _add_bias(y, b):
    return y if b is None else y + b[None, :, None, None]


# ----------------------------------------------------------------------------- conv2d


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv2d(x, w, b, stride, padding):
    return _add_bias(_conv_forward(x, w, stride, padding), b)


def _conv2d_fwd(x, w, b, stride, padding):
    return _conv2d(x, w, b, stride, padding), (x, w, b)


def _conv2d_bwd(stride, padding, res, g):
    x, w, b = res
    dx = _conv_input_grad(g, w, stride, padding, x.shape[2:])  # Law 1: Y* = W* X*  =>  dX* = W*ᵀ g
    dw = _conv_weight_grad(x, g, stride, padding, w.shape[2:])  # Law 2: Y = W X* (X* the im2col matrix)  =>  dW = g X*ᵀ
    db = None if b is None else g.sum(axis=(0, 2, 3))
    return dx, dw, db


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d(x, w, b=None, *, stride=1, padding=0):
    """2-D convolution (cross-correlation, as in PyTorch's ``F.conv2d``).

    Args:
      x: input ``(N, C, H, W)``.
      w: filters ``(K, C, kh, kw)``.
      b: bias ``(K,)`` or ``None``.
      stride: int or ``(sh, sw)``, >= 1.
      padding: int or ``(ph, pw)``, >= 0; zeros on both sides.

    Returns:
      ``(N, K, Ho, Wo)`` with ``Ho = floor((H + 2 ph - kh) / sh) + 1`` (likewise ``Wo``).

    Backward (handwritten): ``dx = W*ᵀ g`` (a transposed convolution, which is
    ``deconv2d(g, w)``), ``dw = g X*ᵀ``, ``db = Σ_{N,H,W} g``.
    """
    stride = _checks.int_pair("stride", stride, minimum=1)
    padding = _checks.int_pair("padding", padding, minimum=0)
    x = _checks.float_array("x", x, ndim=4, layout="(N, C, H, W)")
    w = _checks.float_array("w", w, ndim=4, layout="(out_channels, in_channels, kh, kw)")
    if b is not None:
        b = _checks.float_array("b", b, ndim=1, layout="(out_channels,)")
    _checks.same_dtype("conv2d", x=x, w=w, b=b)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"conv2d: x has {x.shape[1]} channels (shape {tuple(x.shape)}) but w expects {w.shape[1]} "
            f"(shape {tuple(w.shape)}, laid out (out_channels, in_channels, kh, kw))"
        )
    if b is not None and b.shape[0] != w.shape[0]:
        raise ValueError(f"conv2d: b has shape {tuple(b.shape)}, expected ({w.shape[0]},) to match w {tuple(w.shape)}")
    _check_conv_geometry("conv2d", x.shape[2:], w.shape[2:], padding)
    return _conv2d(x, w, b, stride, padding)


# ----------------------------------------------------------------------------- deconv2d


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _deconv2d(x, w, b, stride, padding, out_hw):
    return _add_bias(_conv_input_grad(x, w, stride, padding, out_hw), b)


def _deconv2d_fwd(x, w, b, stride, padding, out_hw):
    return _deconv2d(x, w, b, stride, padding, out_hw), (x, w, b)


def _deconv2d_bwd(stride, padding, out_hw, res, g):
    x, w, b = res
    dx = _conv_forward(g, w, stride, padding)  # Law 1: Y* = W*ᵀ X*  =>  dX* = (W*ᵀ)ᵀ g = W* g, a convolution
    dw = _conv_weight_grad(g, x, stride, padding, w.shape[2:])  # the conv weight gradient with g and x swapped
    db = None if b is None else g.sum(axis=(0, 2, 3))
    return dx, dw, db


_deconv2d.defvjp(_deconv2d_fwd, _deconv2d_bwd)


def deconv2d(x, w, b=None, *, stride=1, padding=0, output_padding=0):
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

    Returns:
      ``(N, C_out, Ho, Wo)`` with ``Ho = (H - 1) sh - 2 ph + kh + output_padding`` (likewise ``Wo``).

    Backward (handwritten): ``dx = conv2d(g, w)``, ``dw`` the conv weight gradient with ``g`` as
    input and ``x`` as output gradient, ``db = Σ g``.
    """
    stride = _checks.int_pair("stride", stride, minimum=1)
    padding = _checks.int_pair("padding", padding, minimum=0)
    output_padding = _checks.int_pair("output_padding", output_padding, minimum=0)
    _check_output_padding("deconv2d", output_padding, stride)
    x = _checks.float_array("x", x, ndim=4, layout="(N, C_in, H, W)")
    w = _checks.float_array("w", w, ndim=4, layout="(in_channels, out_channels, kh, kw)")
    if b is not None:
        b = _checks.float_array("b", b, ndim=1, layout="(out_channels,)")
    _checks.same_dtype("deconv2d", x=x, w=w, b=b)
    if x.shape[1] != w.shape[0]:
        raise ValueError(
            f"deconv2d: x has {x.shape[1]} channels (shape {tuple(x.shape)}) but w expects {w.shape[0]} "
            f"(shape {tuple(w.shape)}, laid out (in_channels, out_channels, kh, kw))"
        )
    if b is not None and b.shape[0] != w.shape[1]:
        raise ValueError(f"deconv2d: b has shape {tuple(b.shape)}, expected ({w.shape[1]},) to match w {tuple(w.shape)}")
    out_hw = deconv_output_size(x.shape[2:], w.shape[2:], stride, padding, output_padding)
    if min(out_hw) < 1:
        raise ValueError(
            f"deconv2d: output size {out_hw} is not positive for input {tuple(x.shape[2:])}, kernel "
            f"{tuple(w.shape[2:])}, stride {stride}, padding {padding}; expected a smaller padding"
        )
    return _deconv2d(x, w, b, stride, padding, out_hw)


# ----------------------------------------------------------------------------- layers


def _conv_config(out_channels, kernel_size, stride, padding):
    return (
        _checks.positive_int("out_channels", out_channels),
        _checks.int_pair("kernel_size", kernel_size, minimum=1),
        _checks.int_pair("stride", stride, minimum=1),
        _checks.int_pair("padding", padding, minimum=0),
    )


def Conv2D(out_channels: int, kernel_size, stride=1, padding=0, *, use_bias=True, w_init="he_normal", dtype=jnp.float32) -> Layer:
    """Convolution layer with params ``{"w": (out, in, kh, kw), "b": (out,)}``.

    ``w`` is drawn by ``w_init`` with ``fan_in = in * kh * kw`` (He normal by
    default), ``b`` starts at zero. Input ``(N, in, H, W)``, output
    ``(N, out_channels, Ho, Wo)`` as in ``conv2d``.
    """
    out_channels, kernel, stride, padding = _conv_config(out_channels, kernel_size, stride, padding)
    w_init = initializers.get(w_init)

    def init(key, input_shape):
        n, c, h, w_ = _check_shape("Conv2D", input_shape, 4, "(N, C, H, W)")
        _check_conv_geometry("Conv2D", (h, w_), kernel, padding)
        fan_in, fan_out = c * kernel[0] * kernel[1], out_channels * kernel[0] * kernel[1]
        params = {"w": w_init(key, (out_channels, c, *kernel), fan_in, fan_out, dtype)}
        if use_bias:
            params["b"] = jnp.zeros((out_channels,), dtype)
        return (n, out_channels, *conv_output_size((h, w_), kernel, stride, padding)), params

    def apply(params, x, *, key=None, train=False):
        return conv2d(x, params["w"], params.get("b"), stride=stride, padding=padding)

    config = {"out_channels": out_channels, "kernel_size": kernel, "stride": stride, "padding": padding, "use_bias": use_bias}
    return Layer(init, apply, "Conv2D", MappingProxyType(config))


def Deconv2D(
    out_channels: int, kernel_size, stride=1, padding=0, output_padding=0, *, use_bias=True, w_init="he_normal", dtype=jnp.float32
) -> Layer:
    """Transposed-convolution layer with params ``{"w": (in, out, kh, kw), "b": (out,)}``.

    ``w`` is drawn by ``w_init`` with ``fan_in = in * kh * kw / (sh * sw)``, the
    average number of inputs that feed one output; ``b`` starts at zero. Input
    ``(N, in, H, W)``, output ``(N, out_channels, Ho, Wo)`` as in ``deconv2d``.
    """
    out_channels, kernel, stride, padding = _conv_config(out_channels, kernel_size, stride, padding)
    output_padding = _checks.int_pair("output_padding", output_padding, minimum=0)
    _check_output_padding("Deconv2D", output_padding, stride)
    w_init = initializers.get(w_init)

    def init(key, input_shape):
        n, c, h, w_ = _check_shape("Deconv2D", input_shape, 4, "(N, C, H, W)")
        out_hw = deconv_output_size((h, w_), kernel, stride, padding, output_padding)
        if min(out_hw) < 1:
            raise ValueError(f"Deconv2D: output size {out_hw} is not positive for input_shape {tuple(input_shape)}")
        taps = kernel[0] * kernel[1]
        fan_in = max(1, c * taps // (stride[0] * stride[1]))
        params = {"w": w_init(key, (c, out_channels, *kernel), fan_in, out_channels * taps, dtype)}
        if use_bias:
            params["b"] = jnp.zeros((out_channels,), dtype)
        return (n, out_channels, *out_hw), params

    def apply(params, x, *, key=None, train=False):
        return deconv2d(x, params["w"], params.get("b"), stride=stride, padding=padding, output_padding=output_padding)

    config = {
        "out_channels": out_channels,
        "kernel_size": kernel,
        "stride": stride,
        "padding": padding,
        "output_padding": output_padding,
        "use_bias": use_bias,
    }
    return Layer(init, apply, "Deconv2D", MappingProxyType(config))
