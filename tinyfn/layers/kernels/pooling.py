"""What every formulation's pooling shares: which tap wins a window, and the routing ``Sᵀ g`` back."""

from __future__ import annotations

import jax.numpy as jnp

from tinyfn.layers.kernels.geometry import chwn, nchw, pool_geometry, untap

__all__ = ["takes", "route_back"]


def takes(new, best, new_real, best_real):
    """Whether tap ``new`` replaces the running maximum ``best``: strictly larger (the first maximum
    wins), a NaN over a number (NaN propagates), or a real input over padding that ties it."""
    take = (new > best) | (jnp.isnan(new) & ~jnp.isnan(best))
    if new_real is not None:
        take = take | ((new == best) & new_real & ~best_real)
    return take


def route_back(g, code, window, stride, padding, in_hw):
    """``Sᵀ g``: each ``g`` to the input position its window's maximum came from (summed where windows
    overlap). Loop-free in every formulation: one select where the windows tile the input, else one
    masked ``lax.pad`` per tap."""
    (kh, kw), (h, w) = window, in_hw
    n, c, ho, wo = g.shape
    zero = jnp.zeros((), g.dtype)
    if pool_geometry(in_hw, window, stride, padding) in ("tiled", "tiled-remainder"):  # one select, no scatter
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
