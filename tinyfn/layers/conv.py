"""2-D convolution and transposed convolution (deconvolution), NCHW.

Convolution is a linear map of the unrolled input, ``Y* = W* X*``, where
``W*`` is the sparse unrolled-filter matrix (see ``tinyfn.layers.conv_matrix``
for the teaching version that builds it). The handwritten rules follow from the
two matrix laws without ever building ``W*``:

* ``dX* = W*ᵀ g``: the input gradient is a transposed convolution of ``g``;
* ``dW  = g X*ᵀ``: the weight gradient correlates ``g`` with the input patches;
* deconvolution's forward *is* ``W*ᵀ``, so its backward is a convolution.

All three are computed by the same three kernels below. By default they are
literally the two laws: ``X*`` (im2col, ``(C·kh·kw, Ho·Wo·N)``) is built once in
the forward and kept for the backward, and each rule is one matrix product —
``Y = W X*``, ``dW = g X*ᵀ``, ``dX* = Wᵀ g`` followed by col2im (each tap of
``dX*`` added back where it was taken). Inside, arrays are laid out
``(C, H, W, N)``: channels first so that every product is a plain 2-D GEMM, the
batch innermost so that every tap is a shift of whole contiguous rows; the
layout changes at the NCHW API cancel between consecutive tinyfn ops under
``jit``. A ``direct`` formulation (one fused multiply-add per filter tap) serves
the shapes where the GEMM would degenerate to a matrix-vector product.
"""

from __future__ import annotations

from functools import partial
from types import MappingProxyType

import jax
import jax.numpy as jnp
from jax import lax

from tinyfn import _checks, _malloc, initializers
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


def _use_gemm(c, k, kernel) -> bool:
    """Formulation choice: the GEMM over ``X*`` unless the product degenerates to a matrix-vector
    one (a single output channel, or a single input channel under a 1×1 filter)."""
    return k > 1 and c * kernel[0] * kernel[1] > 1


def _chwn(x):
    """``(N, C, H, W) -> (C, H, W, N)``: the layout of the GEMM kernels. Channels first makes each
    product a plain 2-D GEMM; the batch innermost makes every tap a shift of whole contiguous rows."""
    return x.transpose(1, 2, 3, 0)


def _nchw(x):
    """``(C, H, W, N) -> (N, C, H, W)``; between two tinyfn ops it cancels the next ``_chwn``."""
    return x.transpose(3, 0, 1, 2)


def _span(out_hw, stride):
    return tuple((o - 1) * s + 1 for o, s in zip(out_hw, stride))


def _im2col(xp, kernel, out_hw, stride):
    """Every tap of the padded ``xp (A, Hp, Wp, B)``, stacked: ``(A, kh·kw, Ho, Wo, B)``.

    Built tap by tap in a loop, which also makes XLA compute ``xp`` once: it would otherwise
    fuse (and so recompute) ``xp``'s producer into each of the ``kh·kw`` tap slices.
    """
    (kh, kw), (sh, sw) = kernel, stride
    a, _, _, b = xp.shape

    def put(t, cols):
        tap = lax.dynamic_slice(xp, (0, t // kw, t % kw, 0), (a, *_span(out_hw, stride), b))[:, ::sh, ::sw]
        return lax.dynamic_update_slice(cols, tap[:, None], (0, t, 0, 0, 0))

    return lax.fori_loop(0, kh * kw, put, jnp.zeros((a, kh * kw, *out_hw, b), xp.dtype))


def _col2im(tap_grad, kernel, in_hw, stride, padding, shape, dtype):
    """Transpose of ``_im2col``: add each ``tap_grad(t) (A, Ho, Wo, B)`` back under tap ``t`` of a zero
    padded ``(A, H + 2ph, W + 2pw, B)``, then crop the padding. A loop, so the result is computed once."""
    (kh, kw), (sh, sw), (ph, pw), (h, w) = kernel, stride, padding, in_hw
    a, _, _, b = shape
    zero = jnp.zeros((), dtype)

    def add(t, acc):
        d = lax.pad(tap_grad(t), zero, ((0, 0, 0), (0, 0, sh - 1), (0, 0, sw - 1), (0, 0, 0)))  # stride: zeros between
        at = (0, t // kw, t % kw, 0)
        return lax.dynamic_update_slice(acc, lax.dynamic_slice(acc, at, d.shape) + d, at)

    acc = lax.fori_loop(0, kh * kw, add, jnp.zeros((a, h + 2 * ph, w + 2 * pw, b), dtype))
    return acc[:, ph : ph + h, pw : pw + w]


MAX_UNROLLED_BYTES = (64 if _malloc.tuned() else 32) * 2**20
"""The largest ``X*`` (or ``dX*``) built at once. Above it the batch is split into chunks that
go through the GEMMs one after the other, and the backward rebuilds each chunk's ``X*``.
With glibc's defaults, blocks above 32 MiB are mapped and unmapped on every use, a page fault
per 4 KiB, so a larger ``X*`` would cost that on every step; once ``import tinyfn`` has raised
the thresholds (``tinyfn/_malloc.py``), 64 MiB measured best (LeNet-5 at batch 512: 31 ms a
step against 49 ms at 32 MiB; the 32/64 CNN at batch 512 the same either way, slower at 256)."""


def _n_chunks(x_shape, kernel, out_hw) -> int:
    """How many batch chunks keep ``X*`` under ``MAX_UNROLLED_BYTES`` (a divisor of N when one is close)."""
    n, c = x_shape[:2]
    total = c * kernel[0] * kernel[1] * out_hw[0] * out_hw[1] * n * 4
    m = min(n, -(-total // MAX_UNROLLED_BYTES))
    if m <= 1:
        return 1  # also an empty batch
    return next((d for d in range(m, min(2 * m, n) + 1) if n % d == 0), m)


def _split(a, m):
    """``(A, H, W, N) -> (m, A, H, W, ⌈N/m⌉)``, the batch zero-padded to a multiple of ``m``."""
    n = a.shape[-1]
    nc = -(-n // m)
    a = jnp.pad(a, ((0, 0), (0, 0), (0, 0), (0, m * nc - n)))
    return a.reshape(*a.shape[:3], m, nc).transpose(3, 0, 1, 2, 4)


def _merge(a, n):
    """Inverse of ``_split``: ``(m, A, H, W, nc) -> (A, H, W, n)``."""
    m, *mid, nc = a.shape
    return a.transpose(1, 2, 3, 0, 4).reshape(*mid, m * nc)[..., :n]


def _padded(x, padding):
    """``x (N, C, H, W)`` as ``(C, H + 2ph, W + 2pw, N)``."""
    (ph, pw) = padding
    return jnp.pad(_chwn(x), ((0, 0), (ph, ph), (pw, pw), (0, 0)))


def _unrolled(x, kernel, stride, padding):
    """``X*`` of ``x (N, C, H, W)``: ``(C·kh·kw, Ho·Wo·N)``, rows ``(c, i, j)`` as in ``w.reshape(K, -1)``;
    ``None`` when it is built chunk by chunk (see ``MAX_UNROLLED_BYTES``)."""
    out_hw = conv_output_size(x.shape[2:], kernel, stride, padding)
    if _n_chunks(x.shape, kernel, out_hw) > 1:
        return None
    return _im2col(_padded(x, padding), kernel, out_hw, stride).reshape(x.shape[1] * kernel[0] * kernel[1], -1)


def _dot_nt(a, b):
    """``a bᵀ`` for 2-D ``a``, ``b``."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())))


def _conv_forward(x, w, stride, padding, cols=None):
    """``y[n,k] = Σ_{c,i,j} w[k,c,i,j] xp[n,c,i+s·r,j+s·q]``, i.e. ``Y* = W* X*``; ``cols`` is ``X*`` if known."""
    k, c, kh, kw = w.shape
    n = x.shape[0]
    out_hw = conv_output_size(x.shape[2:], (kh, kw), stride, padding)
    if _use_gemm(c, k, (kh, kw)):
        w2 = w.reshape(k, -1)
        if cols is None:
            cols = _unrolled(x, (kh, kw), stride, padding)
        if cols is not None:
            return _nchw((w2 @ cols).reshape(k, *out_hw, n))
        chunk = lambda xc: (w2 @ _im2col(xc, (kh, kw), out_hw, stride).reshape(w2.shape[1], -1)).reshape(k, *out_hw, -1)  # noqa: E731
        return _nchw(_merge(lax.map(chunk, _split(_padded(x, padding), _n_chunks(x.shape, (kh, kw), out_hw))), n))
    y = None
    for t, tap in enumerate(_taps(_pad(x, padding), (kh, kw), out_hw, stride)):
        for ci in range(c):
            term = tap[:, ci : ci + 1] * w[None, :, ci, t // kw, t % kw, None, None]
            y = term if y is None else y + term
    return y


def _conv_input_grad(g, w, stride, padding, in_hw):
    """``W*ᵀ g``: the transposed convolution of ``g (N, K, Ho, Wo)`` back to ``(N, C, H, W)``."""
    k, c, kh, kw = w.shape
    n, _, ho, wo = g.shape
    if _use_gemm(c, k, (kh, kw)):
        wt = w.reshape(k, c, kh * kw).transpose(1, 2, 0).reshape(-1, k)  # Wᵀ as its own array: XLA's faster GEMM

        def back(gc):  # (K, Ho, Wo, nc) -> (C, H, W, nc)
            dcols = (wt @ gc.reshape(k, -1)).reshape(c, kh * kw, ho, wo, -1)
            tap_grad = lambda t: lax.dynamic_index_in_dim(dcols, t, axis=1, keepdims=False)  # noqa: E731
            return _col2im(tap_grad, (kh, kw), in_hw, stride, padding, (c, ho, wo, gc.shape[-1]), g.dtype)

        m = _n_chunks((n, c), (kh, kw), (ho, wo))
        return _nchw(back(_chwn(g)) if m == 1 else _merge(lax.map(back, _split(_chwn(g), m)), n))
    wt = w.reshape(k, c, kh * kw)

    def tap_grad(t):  # Σ_k g[:, k] w[k, :, i, j], as (N, Ho, Wo, C)
        wk = lax.dynamic_index_in_dim(wt, t, axis=2, keepdims=False)
        return sum(g[:, kk : kk + 1] * wk[kk][None, :, None, None] for kk in range(k)).transpose(0, 2, 3, 1)

    return _col2im(tap_grad, (kh, kw), in_hw, stride, padding, (n, ho, wo, c), g.dtype).transpose(0, 3, 1, 2)


def _conv_weight_grad(x, g, stride, padding, kernel, cols=None):
    """``g X*ᵀ``: ``dw[k,c,i,j] = Σ_{n,r,q} g[n,k,r,q] xp[n,c,i+s·r,j+s·q]``; ``cols`` is ``X*`` if known."""
    c, k, (ho, wo) = x.shape[1], g.shape[1], g.shape[2:]
    kh, kw = kernel
    if _use_gemm(c, k, kernel):
        if cols is None:
            cols = _unrolled(x, kernel, stride, padding)
        if cols is not None:
            dwt = _dot_nt(cols, _chwn(g).reshape(k, -1))  # X* gᵀ = dWᵀ: the faster operand order here
        else:

            def add(dwt, xg):
                xc, gc = xg
                return dwt + _dot_nt(_im2col(xc, kernel, (ho, wo), stride).reshape(dwt.shape[0], -1), gc.reshape(k, -1)), None

            m = _n_chunks(x.shape, kernel, (ho, wo))
            zero = jnp.zeros((c * kh * kw, k), g.dtype)
            dwt = lax.scan(add, zero, (_split(_padded(x, padding), m), _split(_chwn(g), m)))[0]
        return dwt.reshape(c, kh, kw, k).transpose(3, 0, 1, 2)
    taps = _taps(_pad(x, padding), kernel, (ho, wo), stride)
    dw = jnp.stack([(g[:, :, None] * tap[:, None]).sum((3, 4)).sum(0) for tap in taps], axis=-1)
    return dw.reshape(k, c, kh, kw)


def _add_bias(y, b):
    return y if b is None else y + b[None, :, None, None]


# ----------------------------------------------------------------------------- conv2d


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv2d(x, w, b, stride, padding):
    return _add_bias(_conv_forward(x, w, stride, padding), b)


def _conv2d_fwd(x, w, b, stride, padding):
    cols = _unrolled(x, w.shape[2:], stride, padding) if _use_gemm(*w.shape[1::-1], w.shape[2:]) else None  # X*, kept
    return _add_bias(_conv_forward(x, w, stride, padding, cols), b), (x, cols, w, b)


def _conv2d_bwd(stride, padding, res, g):
    x, cols, w, b = res
    dx = _conv_input_grad(g, w, stride, padding, x.shape[2:])  # Law 1: Y* = W* X*  =>  dX* = W*ᵀ g
    dw = _conv_weight_grad(x, g, stride, padding, w.shape[2:], cols)  # Law 2: Y = W X* (X* the im2col matrix)  =>  dW = g X*ᵀ
    db = None if b is None else g.sum(axis=(0, 2, 3))
    return dx, dw, db


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d_args(op, x, w, b, stride, padding):
    """``conv2d``'s arguments checked, errors naming ``op``: ``(x, w, b, stride, padding)``."""
    stride = _checks.int_pair("stride", stride, minimum=1)
    padding = _checks.int_pair("padding", padding, minimum=0)
    x = _checks.float_array("x", x, ndim=4, layout="(N, C, H, W)")
    w = _checks.float_array("w", w, ndim=4, layout="(out_channels, in_channels, kh, kw)", empty_batch=False)
    if b is not None:
        b = _checks.float_array("b", b, ndim=1, layout="(out_channels,)", empty_batch=False)
    _checks.same_dtype(op, x=x, w=w, b=b)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"{op}: x has {x.shape[1]} channels (shape {tuple(x.shape)}) but w expects {w.shape[1]} "
            f"(shape {tuple(w.shape)}, laid out (out_channels, in_channels, kh, kw))"
        )
    if b is not None and b.shape[0] != w.shape[0]:
        raise ValueError(f"{op}: b has shape {tuple(b.shape)}, expected ({w.shape[0]},) to match w {tuple(w.shape)}")
    _check_conv_geometry(op, x.shape[2:], w.shape[2:], padding)
    return x, w, b, stride, padding


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
    x, w, b, stride, padding = conv2d_args("conv2d", x, w, b, stride, padding)
    return _conv2d(x, w, b, stride, padding)


# ----------------------------------------------------------------------------- deconv2d


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _deconv2d(x, w, b, stride, padding, out_hw):
    return _add_bias(_conv_input_grad(x, w, stride, padding, out_hw), b)


def _deconv2d_fwd(x, w, b, stride, padding, out_hw):
    return _add_bias(_conv_input_grad(x, w, stride, padding, out_hw), b), (x, w, b)


def _deconv2d_bwd(stride, padding, out_hw, res, g):
    x, w, b = res
    dx = _conv_forward(g, w, stride, padding)  # Law 1: Y* = W*ᵀ X*  =>  dX* = (W*ᵀ)ᵀ g = W* g, a convolution
    dw = _conv_weight_grad(g, x, stride, padding, w.shape[2:])  # the conv weight gradient with g and x swapped
    db = None if b is None else g.sum(axis=(0, 2, 3))
    return dx, dw, db


_deconv2d.defvjp(_deconv2d_fwd, _deconv2d_bwd)


def deconv2d_args(op, x, w, b, stride, padding, output_padding):
    """``deconv2d``'s arguments checked, errors naming ``op``: ``(x, w, b, stride, padding, out_hw)``."""
    stride = _checks.int_pair("stride", stride, minimum=1)
    padding = _checks.int_pair("padding", padding, minimum=0)
    output_padding = _checks.int_pair("output_padding", output_padding, minimum=0)
    _check_output_padding(op, output_padding, stride)
    x = _checks.float_array("x", x, ndim=4, layout="(N, C_in, H, W)")
    w = _checks.float_array("w", w, ndim=4, layout="(in_channels, out_channels, kh, kw)", empty_batch=False)
    if b is not None:
        b = _checks.float_array("b", b, ndim=1, layout="(out_channels,)", empty_batch=False)
    _checks.same_dtype(op, x=x, w=w, b=b)
    if x.shape[1] != w.shape[0]:
        raise ValueError(
            f"{op}: x has {x.shape[1]} channels (shape {tuple(x.shape)}) but w expects {w.shape[0]} "
            f"(shape {tuple(w.shape)}, laid out (in_channels, out_channels, kh, kw))"
        )
    if b is not None and b.shape[0] != w.shape[1]:
        raise ValueError(f"{op}: b has shape {tuple(b.shape)}, expected ({w.shape[1]},) to match w {tuple(w.shape)}")
    out_hw = deconv_output_size(x.shape[2:], w.shape[2:], stride, padding, output_padding)
    if min(out_hw) < 1:
        raise ValueError(
            f"{op}: output size {out_hw} is not positive for input {tuple(x.shape[2:])}, kernel "
            f"{tuple(w.shape[2:])}, stride {stride}, padding {padding}; expected a smaller padding"
        )
    return x, w, b, stride, padding, out_hw


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
    x, w, b, stride, padding, out_hw = deconv2d_args("deconv2d", x, w, b, stride, padding, output_padding)
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
        _checks.not_channels_last((n, c, h, w_), kernel, op="Conv2D")
        _check_conv_geometry("Conv2D", (h, w_), kernel, padding)
        fan_in, fan_out = c * kernel[0] * kernel[1], out_channels * kernel[0] * kernel[1]
        params = {"w": w_init(key, (out_channels, c, *kernel), fan_in, fan_out, dtype)}
        if use_bias:
            params["b"] = jnp.zeros((out_channels,), dtype)
        return (n, out_channels, *conv_output_size((h, w_), kernel, stride, padding)), params

    def apply(params, x, *, key=None, train=False):
        _checks.layer_params(init, params, x, op="Conv2D")
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
        _checks.layer_params(init, params, x, op="Deconv2D")
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
