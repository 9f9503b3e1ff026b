"""Scaled dot-product attention, ``O = softmax(s Q Kᵀ + B) V``, and its handwritten rules in two formulations.

Per batch entry and head, with ``Q (T, D)``, ``K (S, D)``, ``V (S, Dv)``::

    S = s Q Kᵀ + B        (B: the mask as an additive bias, 0 or -inf for a boolean mask)
    P = softmax(S)        (along the keys, each row)
    O = P V

and the backward, from the two laws and the softmax Jacobian::

    dV = Pᵀ dO            (Law 1: O = P V, P the left factor)
    dP = dO Vᵀ            (Law 2: O = P V, V the right factor)
    dS = P ⊙ (dP − rowsum(dP ⊙ P))    (each row's Jacobian diag(p) − p pᵀ)
    dQ = s dS K           (Law 2: S = s Q Kᵀ)
    dK = s dSᵀ Q          (Law 1 on Sᵀ = s K Qᵀ)

``ATTENTION_FORMULATIONS`` evaluates it two ways, equal up to rounding:

- ``"plain"`` stores ``P`` (``T × S`` per head) for the backward: ``O(T S)`` extra memory.
- ``"blocked"`` (the algorithm of FlashAttention, Dao et al. 2022) never stores ``P``: the
  forward walks blocks of ``block_size`` keys with an online softmax (a running row
  maximum ``m`` and sum ``l``, the partial output rescaled by ``e^{m_old − m_new}`` when
  the maximum grows) and keeps only ``O`` and the row log-sum-exp ``L = m + log l``; the
  backward walks the key blocks again, recomputes each block of ``P = e^{S − L}`` and
  uses ``rowsum(dP ⊙ P) = rowsum(dO ⊙ O)`` (as ``O = P V``), so its extra memory is
  ``O(T · block_size)``, linear in ``T``.

A row whose keys are all masked out (every logit ``-inf``) has output 0 and
sends no gradient anywhere: PyTorch 2.13's ``F.scaled_dot_product_attention``
returns exactly that (zeros, zero gradients) on CPU, for a boolean mask and for
an additive ``-inf`` mask; both formulations match it and never produce NaN.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from tinyfn import _checks

__all__ = ["dot_product_attention", "ATTENTION_FORMULATIONS"]

ATTENTION_FORMULATIONS = ("plain", "blocked")


def _logits(q, k, bias, scale, causal, k_start, s_len, padded):
    """``s Q Kᵀ + B`` for keys ``k_start ..`` (``(N, H, T, b)``), ``-inf`` where causality or padding excludes a key."""
    t, b = q.shape[2], k.shape[2]
    s = scale * jnp.einsum("nhtd,nhsd->nhts", q, k)
    if bias is not None:
        s = s + bias
    if not (causal or padded):
        return s
    j = k_start + jnp.arange(b)
    keep = jnp.broadcast_to((j < s_len)[None, :], (t, b))
    if causal:  # top-left aligned, as PyTorch's is_causal: query i sees keys j <= i
        keep = keep & (j[None, :] <= jnp.arange(t)[:, None])
    return jnp.where(keep[None, None], s, -jnp.inf)


def _safe(m):
    """A row maximum (or log-sum-exp) with a fully masked row's ``-inf`` replaced by 0, so ``S − m`` stays ``-inf``."""
    return jnp.where(jnp.isfinite(m), m, jnp.zeros((), m.dtype))


def _plain_attention(q, k, v, bias, scale, causal):
    """``(O, P)`` by storing the whole ``P``; a fully masked row of ``P`` is 0."""
    s = _logits(q, k, bias, scale, causal, 0, k.shape[2], False)
    e = jnp.exp(s - _safe(s.max(axis=-1, keepdims=True)))
    total = e.sum(axis=-1, keepdims=True)
    p = e / jnp.where(total > 0, total, jnp.ones((), total.dtype))
    return jnp.einsum("nhts,nhsd->nhtd", p, v), p


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention_plain(q, k, v, bias, scale, causal):
    return _plain_attention(q, k, v, bias, scale, causal)[0]


def _attention_plain_fwd(q, k, v, bias, scale, causal):  # the plain forward, so that forward mode can run through it
    o, p = _plain_attention(q, k, v, bias, scale, causal)
    return o, (q, k, v, p)


def _attention_plain_bwd(scale, causal, res, g):
    q, k, v, p = res
    dv = jnp.einsum("nhts,nhtd->nhsd", p, g)  # Law 1: O = P V  =>  dV = Pᵀ dO
    dp = jnp.einsum("nhtd,nhsd->nhts", g, v)  # Law 2: O = P V  =>  dP = dO Vᵀ
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))  # softmax Jacobian diag(p) - p pᵀ, row by row
    dq = scale * jnp.einsum("nhts,nhsd->nhtd", ds, k)  # Law 2: S = s Q Kᵀ  =>  dQ = s dS K
    dk = scale * jnp.einsum("nhts,nhtd->nhsd", ds, q)  # Law 1 on Sᵀ = s K Qᵀ  =>  dK = s dSᵀ Q
    return dq, dk, dv, None  # the mask is a constant


_attention_plain.defvjp(_attention_plain_fwd, _attention_plain_bwd)


def _key_blocks(k, v, bias, block):
    """``k``, ``v`` (and ``bias`` when it varies along the keys) padded to whole blocks, blocks first."""
    n, h, s_len, _ = k.shape
    nb = -(-s_len // block)
    pad = nb * block - s_len

    def split(a):  # (N, H, S, X) -> (nb, N, H, block, X)
        a = jnp.pad(a, ((0, 0), (0, 0), (0, pad), (0, 0)))
        return jnp.moveaxis(a.reshape(n, h, nb, block, a.shape[3]), 2, 0)

    bias_blocks = None
    if bias is not None and bias.shape[3] != 1:
        b = jnp.pad(bias, ((0, 0), (0, 0), (0, 0), (0, pad)))  # the padded keys are excluded by index in _logits
        bias_blocks = jnp.moveaxis(b.reshape(*b.shape[:3], nb, block), 3, 0)
    starts = jnp.arange(nb, dtype=jnp.int32) * block
    return (split(k), split(v), bias_blocks, starts), pad > 0


def _blocked_attention(q, k, v, bias, scale, causal, block):
    """``(O, L)``: the output and each row's log-sum-exp (``-inf`` for a fully masked row), by an online softmax."""
    n, h, t, _ = q.shape
    blocks, padded = _key_blocks(k, v, bias, block)

    def step(carry, xs):
        m, total, acc = carry
        kj, vj, bj, start = xs
        s = _logits(q, kj, bias if bj is None else bj, scale, causal, start, k.shape[2], padded)
        m_new = jnp.maximum(m, s.max(axis=-1, keepdims=True))
        shift = _safe(m_new)
        alpha = jnp.exp(m - shift)  # rescales what was summed under the old maximum; 0 while the row saw no key
        e = jnp.exp(s - shift)
        acc = alpha * acc + jnp.einsum("nhtb,nhbd->nhtd", e, vj)
        return (m_new, alpha * total + e.sum(axis=-1, keepdims=True), acc), None

    init = (
        jnp.full((n, h, t, 1), -jnp.inf, q.dtype),
        jnp.zeros((n, h, t, 1), q.dtype),
        jnp.zeros((n, h, t, v.shape[3]), q.dtype),
    )
    (m, total, acc), _ = lax.scan(step, init, blocks)
    seen = total > 0
    safe_total = jnp.where(seen, total, jnp.ones((), total.dtype))
    return acc / safe_total, jnp.where(seen, m + jnp.log(safe_total), -jnp.inf)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention_blocked(q, k, v, bias, scale, causal, block):
    return _blocked_attention(q, k, v, bias, scale, causal, block)[0]


def _attention_blocked_fwd(q, k, v, bias, scale, causal, block):  # the plain forward, so forward mode runs through it
    o, lse = _blocked_attention(q, k, v, bias, scale, causal, block)
    return o, (q, k, v, bias, o, lse)


def _attention_blocked_bwd(scale, causal, block, res, g):
    q, k, v, bias, o, lse = res
    s_len, dv_size = k.shape[2], v.shape[3]
    blocks, padded = _key_blocks(k, v, bias, block)
    delta = (g * o).sum(axis=-1, keepdims=True)  # rowsum(dP ⊙ P) = rowsum(dO ⊙ O), as O = P V
    lse = _safe(lse)  # a fully masked row: every logit -inf, so its recomputed P is 0

    def step(dq, xs):
        kj, vj, bj, start = xs
        p = jnp.exp(_logits(q, kj, bias if bj is None else bj, scale, causal, start, s_len, padded) - lse)  # P's block
        dvj = jnp.einsum("nhtb,nhtd->nhbd", p, g)  # Law 1: dV = Pᵀ dO, this block's rows
        ds = p * (jnp.einsum("nhtd,nhbd->nhtb", g, vj) - delta)  # Law 2 (dP = dO Vᵀ), then the softmax Jacobian
        dkj = scale * jnp.einsum("nhtb,nhtd->nhbd", ds, q)  # Law 1 on Sᵀ = s K Qᵀ: dK = s dSᵀ Q
        return dq + scale * jnp.einsum("nhtb,nhbd->nhtd", ds, kj), (dkj, dvj)  # Law 2: dQ = s dS K, summed over blocks

    dq, (dk, dv) = lax.scan(step, jnp.zeros_like(q), blocks)

    def merge(a, size):  # (nb, N, H, block, X) -> (N, H, S, X)
        a = jnp.moveaxis(a, 0, 2)
        return a.reshape(*a.shape[:2], -1, size)[:, :, :s_len]

    return dq, merge(dk, q.shape[3]), merge(dv, dv_size), None  # the mask is a constant


_attention_blocked.defvjp(_attention_blocked_fwd, _attention_blocked_bwd)


def _mask_bias(mask, q, k):
    """The mask as a 4-D additive bias of ``q``'s dtype, broadcastable to ``(N, H, T, S)``, or ``None``."""
    op = "dot_product_attention"
    if mask is None:
        return None
    if not hasattr(mask, "dtype") or not hasattr(mask, "shape"):
        mask = jnp.asarray(mask)
    full = (*q.shape[:3], k.shape[2])
    shape = (1,) * (4 - mask.ndim) + tuple(mask.shape)
    if mask.ndim > 4 or any(d not in (1, f) for d, f in zip(shape, full)):
        raise ValueError(
            f"{op}: mask has shape {tuple(mask.shape)}, expected a shape broadcastable to (N, H, T, S) = {full}"
        )
    mask = jnp.reshape(mask, shape)
    if mask.dtype == jnp.bool_:
        return jnp.where(mask, jnp.zeros((), q.dtype), jnp.full((), -jnp.inf, q.dtype))
    if not jnp.issubdtype(mask.dtype, jnp.floating):
        raise TypeError(
            f"{op}: mask must be boolean (True = the key takes part) or floating (added to the logits), "
            f"got dtype {mask.dtype}"
        )
    return lax.stop_gradient(mask.astype(q.dtype))


def _check_qkv(q, k, v):
    op = "dot_product_attention"
    q = _checks.float_array("q", q, ndim=4, layout="(N, H, T, D)", op=op)
    k = _checks.float_array("k", k, ndim=4, layout="(N, H, S, D)", op=op)
    v = _checks.float_array("v", v, ndim=4, layout="(N, H, S, Dv)", op=op)
    _checks.same_dtype(op, q=q, k=k, v=v)
    if k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        expected = f"({q.shape[0]}, {q.shape[1]}, S, {q.shape[3]})"
        raise ValueError(f"{op}: k has shape {tuple(k.shape)}, expected (N, H, S, D) = {expected} to match q {q.shape}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"{op}: v has shape {tuple(v.shape)}, expected (N, H, S, Dv) with (N, H, S) = {tuple(k.shape[:3])} "
            f"to match k {tuple(k.shape)}"
        )
    return q, k, v


def _check_options(scale, causal, formulation, block_size, d):
    op = "dot_product_attention"
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"{op}: scale must be a finite float or None (1/sqrt(D)), got {scale!r}")
    if not isinstance(causal, bool):
        raise TypeError(f"{op}: causal must be True or False, got {causal!r}")
    formulation = "plain" if formulation is None else formulation
    if formulation not in ATTENTION_FORMULATIONS:
        raise ValueError(f"{op}: formulation must be one of {ATTENTION_FORMULATIONS} or None, got {formulation!r}")
    return float(scale), formulation, _checks.positive_int("block_size", block_size, op=op)


def dot_product_attention(q, k, v, *, mask=None, causal=False, scale=None, formulation=None, block_size=128):
    """``softmax(s Q Kᵀ + B) V`` over the keys, per batch entry and head (``F.scaled_dot_product_attention``).

    Args:
      q: ``(N, H, T, D)`` queries.
      k: ``(N, H, S, D)`` keys (``S`` may differ from ``T``).
      v: ``(N, H, S, Dv)`` values (``Dv`` may differ from ``D``).
      mask: ``None``; boolean, broadcastable to ``(N, H, T, S)``, ``True`` where the key takes
        part; or floating, broadcastable likewise, added to the logits (``-inf`` excludes).
        A constant: no gradient flows to it.
      causal: query ``i`` sees keys ``j <= i`` only (top-left aligned, as PyTorch's
        ``is_causal``); with ``mask`` too, a key must pass both (PyTorch refuses the pair).
      scale: ``s``; ``None`` means ``1/sqrt(D)``.
      formulation: one of ``ATTENTION_FORMULATIONS``: ``"plain"`` (the default, ``None``)
        stores ``P``; ``"blocked"`` walks ``block_size`` keys at a time and never stores it.
      block_size: keys per block for ``"blocked"``; ``S`` need not be a multiple of it.

    Returns:
      ``(N, H, T, Dv)``. A row with every key masked out is 0, with zero gradients (as PyTorch).

    Backward (handwritten): ``dV = Pᵀ dO``, ``dP = dO Vᵀ``, ``dS = P ⊙ (dP − rowsum(dP ⊙ P))``,
    ``dQ = s dS K``, ``dK = s dSᵀ Q``; see the module docstring for the blocked form.
    """
    q, k, v = _check_qkv(q, k, v)
    scale, formulation, block_size = _check_options(scale, causal, formulation, block_size, q.shape[3])
    bias = _mask_bias(mask, q, k)
    if formulation == "blocked":
        return _attention_blocked(q, k, v, bias, scale, causal, min(block_size, k.shape[2]))
    return _attention_plain(q, k, v, bias, scale, causal)
