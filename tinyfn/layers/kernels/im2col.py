"""The ``"im2col"`` formulation: the two laws literally, as GEMMs over the unrolled input ``X*``.

``X*`` (``(C·kh·kw, Ho·Wo·N)``) is built by a loop over the filter taps, kept from
the forward for ``dW = g X*ᵀ``, and every product is one GEMM in a ``(C, H, W, N)``
layout (channels first: plain 2-D GEMMs; batch innermost: every tap is a shift of
whole rows); ``dX*`` goes back through col2im. An ``X*`` over ``chunk_bytes`` is
built batch chunk by chunk. Pooling's argmax is a loop over the taps too. Fast on
XLA:CPU, where a loop makes XLA compute a producer once instead of fusing it into
every tap. Every GEMM accumulates in ``accumulator(dtype)`` (float32 for bf16/f16).

Each function returns its result and the path it took (``"im2col"`` or ``"im2col-chunked"``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from tinyfn.layers.kernels.choice import Plan
from tinyfn.layers.kernels.geometry import accumulator, chwn, col2im, conv_output_size, nchw, pad_hw, span
from tinyfn.layers.kernels.pooling import takes

__all__ = ["unrolled", "conv_forward", "conv_input_grad", "conv_weight_grad", "pool_argmax", "n_chunks"]


def _im2col(xp, kernel, out_hw, stride):
    """Every tap of the padded ``xp (A, Hp, Wp, B)``, stacked: ``(A, kh·kw, Ho, Wo, B)``.

    Built tap by tap in a loop, which also makes XLA compute ``xp`` once: it would otherwise
    fuse (and so recompute) ``xp``'s producer into each of the ``kh·kw`` tap slices.
    """
    (kh, kw), (sh, sw) = kernel, stride
    a, _, _, b = xp.shape

    def put(t, cols):
        tap = lax.dynamic_slice(xp, (0, t // kw, t % kw, 0), (a, *span(out_hw, stride), b))[:, ::sh, ::sw]
        return lax.dynamic_update_slice(cols, tap[:, None], (0, t, 0, 0, 0))

    return lax.fori_loop(0, kh * kw, put, jnp.zeros((a, kh * kw, *out_hw, b), xp.dtype))


def n_chunks(x_shape, kernel, out_hw, itemsize, chunk_bytes) -> int:
    """How many batch chunks keep ``X*`` under ``chunk_bytes`` (a divisor of N when one is close)."""
    n, c = x_shape[:2]
    total = c * kernel[0] * kernel[1] * out_hw[0] * out_hw[1] * n * itemsize
    m = min(n, -(-total // chunk_bytes))
    if m <= 1:
        return 1  # also an empty batch
    return next((d for d in range(m, min(2 * m, n) + 1) if n % d == 0), m)


def _chunks(x_shape, kernel, out_hw, dtype, how: Plan) -> int:
    return n_chunks(x_shape, kernel, out_hw, jnp.dtype(dtype).itemsize, how.chunk_bytes)


def _split(a, m):
    """``(A, H, W, N) -> (m, A, H, W, ⌈N/m⌉)``, the batch zero-padded at its end to a multiple of ``m``."""
    n = a.shape[-1]
    nc = -(-n // m)
    a = jnp.pad(a, ((0, 0), (0, 0), (0, 0), (0, m * nc - n)))
    return a.reshape(*a.shape[:3], m, nc).transpose(3, 0, 1, 2, 4)


def _merge(a, n):
    """Inverse of ``_split``: ``(m, A, H, W, nc) -> (A, H, W, n)``, the padding at the batch's end cropped."""
    m, *mid, nc = a.shape
    return a.transpose(1, 2, 3, 0, 4).reshape(*mid, m * nc)[..., :n]


def _mm(a, b):
    """``a b`` for 2-D ``a``, ``b``, accumulated in ``accumulator(a.dtype)`` (and left there)."""
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=accumulator(a.dtype))


def _mm_nt(a, b):
    """``a bᵀ`` for 2-D ``a``, ``b``, accumulated in ``accumulator(a.dtype)`` (and left there)."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=accumulator(a.dtype))


def unrolled(x, kernel, stride, padding, how: Plan):
    """``X*`` of ``x (N, C, H, W)``: ``(C·kh·kw, Ho·Wo·N)``, rows ``(c, i, j)`` as in ``w.reshape(K, -1)``;
    ``None`` when ``X*`` is over the chunk limit (then it is not kept)."""
    out_hw = conv_output_size(x.shape[2:], kernel, stride, padding)
    if _chunks(x.shape, kernel, out_hw, x.dtype, how) > 1:
        return None
    xp = pad_hw(chwn(x), padding, layout="CHWN")
    return _im2col(xp, kernel, out_hw, stride).reshape(x.shape[1] * kernel[0] * kernel[1], -1)


def conv_forward(x, w, stride, padding, how: Plan, cols=None):
    """``W X*``, one GEMM (or one per batch chunk)."""
    k, _, kh, kw = w.shape
    n = x.shape[0]
    out_hw = conv_output_size(x.shape[2:], (kh, kw), stride, padding)
    w2 = w.reshape(k, -1)
    if cols is None:
        cols = unrolled(x, (kh, kw), stride, padding, how)
    if cols is not None:
        return nchw(_mm(w2, cols).astype(x.dtype).reshape(k, *out_hw, n)), "im2col"

    def chunk(xc):
        return (
            _mm(w2, _im2col(xc, (kh, kw), out_hw, stride).reshape(w2.shape[1], -1))
            .astype(x.dtype)
            .reshape(k, *out_hw, -1)
        )

    m = _chunks(x.shape, (kh, kw), out_hw, x.dtype, how)
    return nchw(_merge(lax.map(chunk, _split(pad_hw(chwn(x), padding, layout="CHWN"), m)), n)), "im2col-chunked"


def conv_input_grad(g, w, stride, padding, in_hw, how: Plan):
    """``W*ᵀ g``: ``dX* = Wᵀ g`` as one GEMM (or one per batch chunk), then col2im."""
    k, c, kh, kw = w.shape
    n, _, ho, wo = g.shape
    wt = w.reshape(k, c, kh * kw).transpose(1, 2, 0).reshape(-1, k)  # Wᵀ as its own array: XLA's faster GEMM
    acc = accumulator(g.dtype)

    def back(gc):  # (K, Ho, Wo, nc) -> (C, H, W, nc)
        dcols = _mm(wt, gc.reshape(k, -1)).reshape(c, kh * kw, ho, wo, -1)
        tap_grad = lambda t: lax.dynamic_index_in_dim(dcols, t, axis=1, keepdims=False)  # noqa: E731
        return col2im(tap_grad, (kh, kw), in_hw, stride, padding, (c, ho, wo, gc.shape[-1]), acc).astype(g.dtype)

    m = _chunks((n, c), (kh, kw), (ho, wo), g.dtype, how)
    if m == 1:
        return nchw(back(chwn(g))), "im2col"
    return nchw(_merge(lax.map(back, _split(chwn(g), m)), n)), "im2col-chunked"


def conv_weight_grad(x, g, stride, padding, kernel, how: Plan, cols=None):
    """``g X*ᵀ``, one GEMM (or a sum over batch chunks)."""
    c, k, (ho, wo) = x.shape[1], g.shape[1], g.shape[2:]
    kh, kw = kernel
    if cols is None:
        cols = unrolled(x, kernel, stride, padding, how)
    if cols is not None:
        dwt, path = _mm_nt(cols, chwn(g).reshape(k, -1)), "im2col"  # X* gᵀ = dWᵀ: the faster operand order here
    else:

        def add(dwt, xg):
            xc, gc = xg
            return dwt + _mm_nt(
                _im2col(xc, kernel, (ho, wo), stride).reshape(dwt.shape[0], -1), gc.reshape(k, -1)
            ), None

        m = _chunks(x.shape, kernel, (ho, wo), x.dtype, how)
        zero = jnp.zeros((c * kh * kw, k), accumulator(x.dtype))
        pieces = (_split(pad_hw(chwn(x), padding, layout="CHWN"), m), _split(chwn(g), m))
        dwt, path = lax.scan(add, zero, pieces)[0], "im2col-chunked"
    return dwt.astype(g.dtype).reshape(c, kh, kw, k).transpose(3, 0, 1, 2), path


def pool_argmax(x, window, stride, padding, out_hw, real):
    """The running maximum over the taps as a loop in the ``(C, H, W, N)`` layout of the conv kernels: as
    loop outputs the maximum and its tap are computed once (XLA would otherwise recompute them in every
    consumer). ``real`` is ``valid_taps``'s masks (``None`` without padding)."""
    (kh, kw), (sh, sw) = window, stride
    xp = pad_hw(chwn(x), padding, -jnp.inf, layout="CHWN")
    c, n = x.shape[1], x.shape[0]
    real_t = None if real is None else jnp.asarray([r[None, :, :, None] for r in real])  # (T, 1, Ho, Wo, 1)

    def tap(t):
        return lax.dynamic_slice(xp, (0, t // kw, t % kw, 0), (c, *span(out_hw, stride), n))[:, ::sh, ::sw]

    def keep_max(t, carry):  # carry: the running maximum, its tap, and (with padding) whether it is a real input
        best, code = carry[:2]
        new = tap(t)
        if real_t is None:
            take = takes(new, best, None, None)
            return jnp.where(take, new, best), jnp.where(take, t, code)
        take = takes(new, best, real_t[t], carry[2])
        return jnp.where(take, new, best), jnp.where(take, t, code), jnp.where(take, real_t[t], carry[2])

    first = tap(0)
    first_real = () if real_t is None else (jnp.broadcast_to(real_t[0], first.shape),)
    best, code, *_ = lax.fori_loop(1, kh * kw, keep_max, (first, jnp.zeros(first.shape, jnp.int32), *first_real))
    return nchw(best), nchw(code)
