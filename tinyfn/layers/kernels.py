"""The kernels that evaluate the products inside the convolution and pooling rules.

``conv.py`` and ``pool.py`` hold the handwritten rules (``dX* = W*ᵀ g``,
``dW = g X*ᵀ``, ``dx = Sᵀ g``); this module only *evaluates* each product, by
one of three formulations (``FORMULATIONS``):

* ``"im2col"``: the two laws literally. ``X*`` (``(C·kh·kw, Ho·Wo·N)``) is built
  by a loop over the filter taps, kept from the forward for ``dW = g X*ᵀ``, and
  every product is one GEMM in a ``(C, H, W, N)`` layout (channels first: plain
  2-D GEMMs; batch innermost: every tap is a shift of whole rows); ``dX*`` goes
  back through col2im. An ``X*`` over ``chunk_bytes`` is built batch chunk by
  chunk. Pooling's argmax is a loop over the taps too. Fast on XLA:CPU, where a
  loop makes XLA compute a producer once instead of fusing it into every tap.
* ``"xla"``: the same products by XLA's own primitives and no loop:
  ``lax.conv_general_dilated`` for ``W X*``; the transposed convolution
  (``lhs_dilation`` = stride, the kernel flipped and in/out swapped) for
  ``W*ᵀ g``; a convolution of ``x`` with ``g`` (batch as the contracted
  dimension, ``rhs_dilation`` = stride) for ``g X*ᵀ``; pooling by
  ``reduce_window`` and equality masks (first maximum wins). On a GPU these
  lower to cuDNN, and a loop there would synchronise with the host every
  iteration.
* ``"direct"``: one fused multiply-add per filter tap (and channel), unrolled;
  the right form where a GEMM degenerates to a matrix-vector product.

Without an explicit choice the formulation is chosen at trace time from the
platform of the arrays' devices (``jax.default_backend()`` for abstract values
under ``jit``): ``default_formulation(platform)``, ``"im2col"`` on CPU (falling to
``"direct"`` for degenerate shapes) and ``"xla"`` on GPU and TPU. ``formulation(name)``
sets the default for everything traced inside it.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

from tinyfn import _checks

__all__ = [
    "FORMULATIONS",
    "CHUNK_BYTES",
    "Plan",
    "formulation",
    "default_formulation",
    "plan",
    "check_options",
    "record_paths",
    "conv_output_size",
    "deconv_output_size",
]

FORMULATIONS = ("im2col", "xla", "direct")

CHUNK_BYTES = 32 * 2**20
"""The default largest ``X*`` (or ``dX*``) the ``im2col`` formulation builds at once; above it the
batch goes through the GEMMs in chunks (and the backward rebuilds each chunk's ``X*``). 32 MiB is
glibc's largest dynamic mmap threshold, so with glibc's default allocator settings an ``X*`` this
size is reused from the heap instead of being mapped and faulted in on every step. After
``tinyfn.tune_allocator()`` a larger limit can pay: 64 MiB measured faster for LeNet-5 at batch 512
(31 against 49 ms a step); pass ``chunk_bytes=64 * 2**20`` to the ops or layers for that."""


# ----------------------------------------------------------------------------- choosing a formulation

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("tinyfn_formulation", default=None)


def _check_name(name, op="formulation"):
    if name not in FORMULATIONS:
        raise ValueError(f"{op}: formulation must be one of {FORMULATIONS} or None, got {name!r}")
    return name


@contextlib.contextmanager
def formulation(name: str | None):
    """Evaluate every op *traced* inside the block with formulation ``name`` (``None``: per backend).

    An explicit ``formulation=`` argument of an op or layer still wins. The choice is made
    while tracing, so a ``jit``-compiled function keeps the formulation of its first call:

    >>> with formulation("xla"):
    ...     step = jax.jit(train_step)
    ...     params = step(params, batch)   # traced here: every conv and pool uses "xla"
    """
    token = _forced.set(None if name is None else _check_name(name))
    try:
        yield
    finally:
        _forced.reset(token)


def default_formulation(platform: str | None = None) -> str:
    """The formulation used when none is asked for: ``"im2col"`` on ``"cpu"``, ``"xla"`` on GPU/TPU.

    ``platform`` defaults to ``jax.default_backend()``.
    """
    platform = jax.default_backend() if platform is None else platform
    return "im2col" if platform == "cpu" else "xla"


def _platform(arrays) -> str:
    for a in arrays:
        if isinstance(a, jax.core.Tracer) or not hasattr(a, "devices"):
            continue
        try:
            return next(iter(a.devices())).platform
        except Exception:  # an array without committed devices
            continue
    return jax.default_backend()


class Plan(NamedTuple):
    """How one op call evaluates its products: ``formulation`` and the ``im2col`` chunk limit in bytes."""

    formulation: str
    chunk_bytes: int


def gemm_degenerates(c: int, k: int, kernel) -> bool:
    """A GEMM over ``X*`` would be a matrix-vector product: one output channel, or one input channel
    under a 1×1 filter."""
    return k == 1 or c * kernel[0] * kernel[1] == 1


def check_options(op: str, name: str | None, chunk_bytes: int | None) -> tuple[str | None, int]:
    """``formulation`` (one of ``FORMULATIONS`` or ``None``) and ``chunk_bytes`` (``None``: ``CHUNK_BYTES``), checked."""
    if name is not None:
        _check_name(name, op)
    return name, CHUNK_BYTES if chunk_bytes is None else _checks.positive_int("chunk_bytes", chunk_bytes, op=op)


def plan(op: str, name: str | None, chunk_bytes: int | None, arrays, w_shape=None) -> Plan:
    """The formulation for one call: ``name`` if given, else ``formulation()``'s, else the backend's
    default (``"im2col"`` there turning ``"direct"`` where the GEMM degenerates, for ``w_shape``)."""
    name, chunk_bytes = check_options(op, name, chunk_bytes)
    if name is not None:
        return Plan(name, chunk_bytes)
    if _forced.get() is not None:
        return Plan(_forced.get(), chunk_bytes)
    chosen = default_formulation(_platform(arrays))
    if chosen == "im2col" and w_shape is not None and gemm_degenerates(w_shape[1], w_shape[0], w_shape[2:]):
        chosen = "direct"
    return Plan(chosen, chunk_bytes)


# ----------------------------------------------------------------------------- which path ran

_recorders: list[list] = []


@contextlib.contextmanager
def record_paths():
    """Collect ``(op, product, path)`` for every product traced inside the block, in order.

    ``path`` is the formulation that evaluated it (``"im2col-chunked"`` when ``X*`` went in
    batch chunks) and, for pooling's routing, the window geometry (``"tiled"``,
    ``"tiled-remainder"``, ``"overlapping"``, ``"gapped"``, ``"padded"``). Tracing only: a
    compiled function that is called again records nothing.
    """
    paths: list = []
    _recorders.append(paths)
    try:
        yield paths
    finally:
        _recorders.remove(paths)


def _record(op, product, path):
    for paths in _recorders:
        paths.append((op, product, path))


# ----------------------------------------------------------------------------- geometry


def conv_output_size(size, kernel, stride, padding):
    """``floor((size + 2 padding - kernel) / stride) + 1`` per spatial dimension."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))


def deconv_output_size(size, kernel, stride, padding, output_padding):
    """``(size - 1) stride - 2 padding + kernel + output_padding`` per spatial dimension."""
    return tuple((n - 1) * s - 2 * p + k + o for n, k, s, p, o in zip(size, kernel, stride, padding, output_padding))


# ----------------------------------------------------------------------------- layouts and taps
# x (N, C, H, W), w (K, C, kh, kw), g (N, K, Ho, Wo); stride/padding are int pairs.


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
    return lax.pad(
        c,
        jnp.zeros((), c.dtype),
        ((0, 0, 0), (0, 0, 0), (lo_h, h - lo_h - (ho - 1) * sh - 1, sh - 1), (lo_w, w - lo_w - (wo - 1) * sw - 1, sw - 1)),
    )


def _span(out_hw, stride):
    return tuple((o - 1) * s + 1 for o, s in zip(out_hw, stride))


# ----------------------------------------------------------------------------- im2col


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


def n_chunks(x_shape, kernel, out_hw, itemsize, chunk_bytes) -> int:
    """How many batch chunks keep ``X*`` under ``chunk_bytes`` (a divisor of N when one is close)."""
    n, c = x_shape[:2]
    total = c * kernel[0] * kernel[1] * out_hw[0] * out_hw[1] * n * itemsize
    m = min(n, -(-total // chunk_bytes))
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


def _chunks(x_shape, kernel, out_hw, dtype, how: Plan) -> int:
    return n_chunks(x_shape, kernel, out_hw, jnp.dtype(dtype).itemsize, how.chunk_bytes)


def unrolled(x, kernel, stride, padding, how: Plan):
    """``X*`` of ``x (N, C, H, W)``: ``(C·kh·kw, Ho·Wo·N)``, rows ``(c, i, j)`` as in ``w.reshape(K, -1)``;
    ``None`` unless ``how`` is ``im2col`` with ``X*`` under its chunk limit (then it is not kept)."""
    out_hw = conv_output_size(x.shape[2:], kernel, stride, padding)
    if how.formulation != "im2col" or _chunks(x.shape, kernel, out_hw, x.dtype, how) > 1:
        return None
    return _im2col(pad_hw(chwn(x), padding, layout="CHWN"), kernel, out_hw, stride).reshape(x.shape[1] * kernel[0] * kernel[1], -1)


def _dot_nt(a, b):
    """``a bᵀ`` for 2-D ``a``, ``b``."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())))


# ----------------------------------------------------------------------------- the three conv products

_NCHW = ("NCHW", "OIHW", "NCHW")


def conv_forward(x, w, stride, padding, how: Plan, cols=None, *, op="conv2d"):
    """``W X*``: ``y[n,k] = Σ_{c,i,j} w[k,c,i,j] xp[n,c,i+s·r,j+s·q]``; ``cols`` is ``X*`` if known."""
    k, c, kh, kw = w.shape
    n = x.shape[0]
    out_hw = conv_output_size(x.shape[2:], (kh, kw), stride, padding)
    if how.formulation == "xla":
        _record(op, "W X*", "xla")
        (ph, pw) = padding
        return lax.conv_general_dilated(x, w, stride, ((ph, ph), (pw, pw)), dimension_numbers=_NCHW)
    if how.formulation == "im2col":
        w2 = w.reshape(k, -1)
        if cols is None:
            cols = unrolled(x, (kh, kw), stride, padding, how)
        if cols is not None:
            _record(op, "W X*", "im2col")
            return nchw((w2 @ cols).reshape(k, *out_hw, n))
        _record(op, "W X*", "im2col-chunked")
        chunk = lambda xc: (w2 @ _im2col(xc, (kh, kw), out_hw, stride).reshape(w2.shape[1], -1)).reshape(k, *out_hw, -1)  # noqa: E731
        m = _chunks(x.shape, (kh, kw), out_hw, x.dtype, how)
        return nchw(_merge(lax.map(chunk, _split(pad_hw(chwn(x), padding, layout="CHWN"), m)), n))
    _record(op, "W X*", "direct")
    y = None
    for t, tap in enumerate(taps(pad_hw(x, padding), (kh, kw), out_hw, stride)):
        for ci in range(c):
            term = tap[:, ci : ci + 1] * w[None, :, ci, t // kw, t % kw, None, None]
            y = term if y is None else y + term
    return y


def conv_input_grad(g, w, stride, padding, in_hw, how: Plan, *, op="conv2d"):
    """``W*ᵀ g``: the transposed convolution of ``g (N, K, Ho, Wo)`` back to ``(N, C, H, W)``."""
    k, c, kh, kw = w.shape
    n, _, ho, wo = g.shape
    if how.formulation == "xla":
        _record(op, "W*ᵀ g", "xla")
        # A stride-1 convolution of g dilated by the stride (zeros between its rows and columns), with the
        # kernel flipped and in/out swapped, padded by kh-1-p before and up to H after (cropping where
        # negative). The dilation and padding are one explicit lax.pad: given to the convolution as
        # lhs_dilation, XLA:CPU's simplifier aborts the process on some strided shapes (jax 0.10.2).
        lo = [kk - 1 - p for kk, p in zip((kh, kw), padding)]
        hi = [hw - (o - 1) * s - 1 - l + kk - 1 for hw, o, s, l, kk in zip(in_hw, (ho, wo), stride, lo, (kh, kw))]
        gd = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (0, 0, 0), *((l, h, s - 1) for l, h, s in zip(lo, hi, stride))))
        wt = jnp.flip(w, (2, 3)).transpose(1, 0, 2, 3)
        return lax.conv_general_dilated(gd, wt, (1, 1), ((0, 0), (0, 0)), dimension_numbers=_NCHW)
    if how.formulation == "im2col":
        wt = w.reshape(k, c, kh * kw).transpose(1, 2, 0).reshape(-1, k)  # Wᵀ as its own array: XLA's faster GEMM

        def back(gc):  # (K, Ho, Wo, nc) -> (C, H, W, nc)
            dcols = (wt @ gc.reshape(k, -1)).reshape(c, kh * kw, ho, wo, -1)
            tap_grad = lambda t: lax.dynamic_index_in_dim(dcols, t, axis=1, keepdims=False)  # noqa: E731
            return _col2im(tap_grad, (kh, kw), in_hw, stride, padding, (c, ho, wo, gc.shape[-1]), g.dtype)

        m = _chunks((n, c), (kh, kw), (ho, wo), g.dtype, how)
        _record(op, "W*ᵀ g", "im2col" if m == 1 else "im2col-chunked")
        return nchw(back(chwn(g)) if m == 1 else _merge(lax.map(back, _split(chwn(g), m)), n))
    _record(op, "W*ᵀ g", "direct")
    wt = w.reshape(k, c, kh * kw)

    def tap_grad(t):  # Σ_k g[:, k] w[k, :, i, j], as (N, Ho, Wo, C)
        wk = lax.dynamic_index_in_dim(wt, t, axis=2, keepdims=False)
        return sum(g[:, kk : kk + 1] * wk[kk][None, :, None, None] for kk in range(k)).transpose(0, 2, 3, 1)

    return _col2im(tap_grad, (kh, kw), in_hw, stride, padding, (n, ho, wo, c), g.dtype).transpose(0, 3, 1, 2)


def conv_weight_grad(x, g, stride, padding, kernel, how: Plan, cols=None, *, op="conv2d"):
    """``g X*ᵀ``: ``dw[k,c,i,j] = Σ_{n,r,q} g[n,k,r,q] xp[n,c,i+s·r,j+s·q]``; ``cols`` is ``X*`` if known."""
    c, k, (ho, wo) = x.shape[1], g.shape[1], g.shape[2:]
    kh, kw = kernel
    if how.formulation == "xla":
        _record(op, "g X*ᵀ", "xla")
        # A convolution of x with g as its kernel: the batch is the contracted (feature) dimension, the
        # stride becomes the kernel's dilation. Rows past the last tap's reach are padded off (or cropped).
        rem = [(n + 2 * p - kk) % s for n, p, kk, s in zip(x.shape[2:], padding, kernel, stride)]
        pads = [(p, p - r) for p, r in zip(padding, rem)]
        crop = [max(-hi, 0) for _, hi in pads]
        if any(crop):
            x = x[:, :, : x.shape[2] - crop[0], : x.shape[3] - crop[1]]
        dw = lax.conv_general_dilated(
            x, g, (1, 1), [(lo, max(hi, 0)) for lo, hi in pads], rhs_dilation=stride, dimension_numbers=("CNHW", "IOHW", "NCHW")
        )  # (C, K, kh, kw)
        return dw.transpose(1, 0, 2, 3)
    if how.formulation == "im2col":
        if cols is None:
            cols = unrolled(x, kernel, stride, padding, how)
        if cols is not None:
            _record(op, "g X*ᵀ", "im2col")
            dwt = _dot_nt(cols, chwn(g).reshape(k, -1))  # X* gᵀ = dWᵀ: the faster operand order here
        else:
            _record(op, "g X*ᵀ", "im2col-chunked")

            def add(dwt, xg):
                xc, gc = xg
                return dwt + _dot_nt(_im2col(xc, kernel, (ho, wo), stride).reshape(dwt.shape[0], -1), gc.reshape(k, -1)), None

            m = _chunks(x.shape, kernel, (ho, wo), x.dtype, how)
            zero = jnp.zeros((c * kh * kw, k), g.dtype)
            dwt = lax.scan(add, zero, (_split(pad_hw(chwn(x), padding, layout="CHWN"), m), _split(chwn(g), m)))[0]
        return dwt.reshape(c, kh, kw, k).transpose(3, 0, 1, 2)
    _record(op, "g X*ᵀ", "direct")
    tap_views = taps(pad_hw(x, padding), kernel, (ho, wo), stride)
    dw = jnp.stack([(g[:, :, None] * tap[:, None]).sum((3, 4)).sum(0) for tap in tap_views], axis=-1)
    return dw.reshape(k, c, kh, kw)


# ----------------------------------------------------------------------------- pooling


def _valid_taps(in_hw, window, stride, padding, out_hw):
    """Per tap ``t``, a bool ``(Ho, Wo)`` mask (numpy, static) of the windows where tap ``t`` reads the
    real input, not the padding; ``None`` without padding."""
    if padding == (0, 0):
        return None
    (kh, kw), (sh, sw), (ph, pw), (h, w) = window, stride, padding, in_hw
    rows = np.arange(out_hw[0])[:, None] * sh - ph + np.arange(kh)[None, :]  # (Ho, kh)
    cols = np.arange(out_hw[1])[:, None] * sw - pw + np.arange(kw)[None, :]
    rok, cok = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    return [rok[:, i][:, None] & cok[:, j][None, :] for i in range(kh) for j in range(kw)]


def _takes(new, best, new_real, best_real):
    """Whether tap ``new`` replaces the running maximum ``best``: strictly larger (the first maximum
    wins), a NaN over a number (NaN propagates), or a real input over padding that ties it."""
    take = (new > best) | (jnp.isnan(new) & ~jnp.isnan(best))
    if new_real is not None:
        take = take | ((new == best) & new_real & ~best_real)
    return take


def pool_argmax(x, window, stride, padding, how: Plan, *, op="max_pool2d"):
    """Pooled maxima ``(N, C, Ho, Wo)`` and the window-local tap ``i * kw + j`` of each (int32).

    The first maximum in row-major window order wins; NaN propagates; padded positions never win
    (in an all ``-inf`` window the first real ``-inf`` does).
    """
    (kh, kw), (sh, sw) = window, stride
    out_hw = conv_output_size(x.shape[2:], window, stride, padding)
    real = _valid_taps(x.shape[2:], window, stride, padding, out_hw)
    _record(op, "argmax", how.formulation)
    if how.formulation == "im2col":
        # A loop over the taps in the (C, H, W, N) layout of the conv kernels: as loop outputs the running
        # maximum and its tap are computed once (XLA would otherwise recompute them in every consumer).
        xp = pad_hw(chwn(x), padding, -jnp.inf, layout="CHWN")
        c, n = x.shape[1], x.shape[0]
        real_t = None if real is None else jnp.asarray([r[None, :, :, None] for r in real])  # (T, 1, Ho, Wo, 1)

        def tap(t):
            return lax.dynamic_slice(xp, (0, t // kw, t % kw, 0), (c, *_span(out_hw, stride), n))[:, ::sh, ::sw]

        def keep_max(t, carry):  # carry: the running maximum, its tap, and (with padding) whether it is a real input
            best, code = carry[:2]
            new = tap(t)
            if real_t is None:
                take = _takes(new, best, None, None)
                return jnp.where(take, new, best), jnp.where(take, t, code)
            take = _takes(new, best, real_t[t], carry[2])
            return jnp.where(take, new, best), jnp.where(take, t, code), jnp.where(take, real_t[t], carry[2])

        first = tap(0)
        first_real = () if real_t is None else (jnp.broadcast_to(real_t[0], first.shape),)
        best, code, *_ = lax.fori_loop(1, kh * kw, keep_max, (first, jnp.zeros(first.shape, jnp.int32), *first_real))
        return nchw(best), nchw(code)
    views = taps(pad_hw(x, padding, -jnp.inf), window, out_hw, stride)
    mask = (lambda t: None) if real is None else (lambda t: jnp.asarray(real[t][None, None]))  # noqa: E731
    if how.formulation == "xla":
        (ph, pw) = padding
        best = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, kh, kw), (1, 1, sh, sw), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        code = jnp.zeros(best.shape, jnp.int32)
        for t in reversed(range(kh * kw)):  # equality masks, the last assignment (the first tap) wins
            hit = (views[t] == best) | (jnp.isnan(views[t]) & jnp.isnan(best))
            if real is not None:
                hit = hit & mask(t)
            code = jnp.where(hit, t, code)
        return best, code
    best, code, best_real = views[0], jnp.zeros(views[0].shape, jnp.int32), mask(0)
    for t in range(1, kh * kw):  # direct: the running maximum, unrolled
        take = _takes(views[t], best, mask(t), best_real)
        best, code = jnp.where(take, views[t], best), jnp.where(take, t, code)
        if real is not None:
            best_real = jnp.where(take, mask(t), best_real)
    return best, code


def pool_geometry(in_hw, window, stride, padding) -> str:
    """Which routing a pooling geometry takes: ``"tiled"`` (windows tile the input exactly),
    ``"tiled-remainder"`` (they tile it but for the last rows/columns), ``"padded"``,
    ``"overlapping"`` (stride < window) or ``"gapped"`` (stride > window)."""
    if padding != (0, 0):
        return "padded"
    if stride == window:
        return "tiled" if all(n % k == 0 for n, k in zip(in_hw, window)) else "tiled-remainder"
    return "overlapping" if any(s < k for s, k in zip(stride, window)) else "gapped"


def route_back(g, code, window, stride, padding, in_hw, *, op="max_pool2d"):
    """``Sᵀ g``: each ``g`` to the input position its window's maximum came from (summed where windows
    overlap). Loop-free in every formulation: one select where the windows tile the input, else one
    masked ``lax.pad`` per tap."""
    (kh, kw), (h, w) = window, in_hw
    n, c, ho, wo = g.shape
    geometry = pool_geometry(in_hw, window, stride, padding)
    _record(op, "Sᵀ g", geometry)
    zero = jnp.zeros((), g.dtype)
    if geometry in ("tiled", "tiled-remainder"):  # one select, no scatter
        # in the (C, H, W, N) layout of the im2col kernels, so that the layout changes cancel there
        gc, cc = chwn(g)[:, :, None, :, None], chwn(code)[:, :, None, :, None]
        tap = jnp.arange(kh * kw, dtype=jnp.int32).reshape(1, 1, kh, 1, kw, 1)
        dx = jnp.where(cc == tap, gc, zero).reshape(c, ho * kh, wo * kw, n)
        dx = jnp.pad(dx, ((0, 0), (0, h - ho * kh), (0, w - wo * kw), (0, 0)))  # the last rows/columns no window covers
        return nchw(dx)
    dx = None
    for t in range(kh * kw):
        part = untap(jnp.where(code == t, g, zero), t // kw, t % kw, in_hw, stride, padding)
        dx = part if dx is None else dx + part
    return dx


def code_to_switches(code, window, stride, padding, in_w):
    """Window-local taps to PyTorch-style flat indices ``h * W + w`` in the input plane."""
    ho, wo = code.shape[2:]
    kw = window[1]
    rows = jnp.arange(ho, dtype=jnp.int32)[None, None, :, None] * stride[0] - padding[0] + code // kw
    cols = jnp.arange(wo, dtype=jnp.int32)[None, None, None, :] * stride[1] - padding[1] + code % kw
    return rows * in_w + cols
