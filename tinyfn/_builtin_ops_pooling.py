"""Max-pooling's samplers for ``tinyfn._builtin_ops``: random geometries, and fixed ones that reach every path.

Each pooling geometry (tiled, tiled with a remainder, overlapping, gapped, padded) in every formulation, with
distinct values (no ties within the finite differences' step) and on exact ties, where the first maximum wins.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn import layers as L, reference as R
from tinyfn.registry import Sample, distinct, normal

_F32 = np.float32


def _ints(rng, low, high, n):
    return tuple(int(v) for v in rng.integers(low, high, n))


def _form(rng):
    return L.FORMULATIONS[int(rng.integers(len(L.FORMULATIONS)))]


# ---- max pooling, switches, unpooling ----

# Every routing geometry: tiled, tiled with a remainder (5 rows, windows of 2: the last row is in no
# window), overlapping, gapped, padded: (window, stride, padding, (H, W)).
GEOMETRIES = (
    ((2, 2), (2, 2), (0, 0), (4, 6)),
    ((2, 2), (2, 2), (0, 0), (5, 5)),
    ((3, 2), (1, 2), (0, 0), (5, 4)),
    ((2, 2), (3, 3), (0, 0), (7, 6)),
    ((3, 3), (2, 2), (1, 1), (5, 6)),
)


def _pool_geometry(rng, extra=6):
    win, s = _ints(rng, 1, 4, 2), _ints(rng, 1, 4, 2)
    p = tuple(int(rng.integers(0, wi // 2 + 1)) for wi in win)
    hw = tuple(int(rng.integers(wi, wi + extra)) for wi in win)
    return win, s, p, hw


def _pool_sample(rng, dtype, geometry, form, n_c=None):
    win, s, p, hw = geometry
    n_c = n_c or (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
    x = distinct(rng, (*n_c, *hw), dtype=dtype)
    cfg = f"x{tuple(x.shape)} window{win} s{s} p{p} [{form or 'default'}]"
    return Sample((x,), {"window": win, "stride": s, "padding": p}, {"formulation": form}, cfg)


def _max_pool2d(rng, dtype=_F32):
    return _pool_sample(rng, dtype, _pool_geometry(rng), _form(rng))


def _max_pool2d_fixed(rng):
    for geometry in GEOMETRIES:
        yield _pool_sample(rng, _F32, geometry, None, (2, 2))


def _max_unpool2d(rng, dtype=_F32, pooled=None):
    pooled = pooled or _max_pool2d(rng, dtype)
    (x,), kw = pooled.args, pooled.kwargs
    y, switches = L.max_pool2d_with_switches(x, **kw, **pooled.op_kwargs)
    hw = tuple(x.shape[2:])
    return Sample((normal(rng, y.shape, dtype), switches), {"output_size": hw}, config=f"y{tuple(y.shape)} -> {hw}")


def _max_unpool2d_fixed(rng):
    for pooled in _max_pool2d_fixed(rng):
        yield _max_unpool2d(rng, _F32, pooled)


def _tie_input(shape, dtype):
    x = np.zeros(shape)
    x[..., ::2, 1::2] = 1.0  # ones on a sparse grid, zeros elsewhere: most windows hold a two-or-more-way tie
    return jnp.asarray(x, dtype)  # ties are exact in any float dtype


def max_pool2d_tie_routing(g, *, window, stride, padding, in_shape, formulation=None):
    """``max_pool2d``'s VJP at an input of exact ties, as a (linear) function of the cotangent ``g``."""
    xs = _tie_input(in_shape, g.dtype)
    pool = partial(L.max_pool2d, window=window, stride=stride, padding=padding, formulation=formulation)
    return jax.vjp(pool, xs)[1](g)[0]


def reference_tie_routing(g, *, window, stride, padding, in_shape):
    """The same routing from the gather reference's autodiff (first maximum wins)."""
    xs = _tie_input(in_shape, g.dtype)
    pool = partial(R.max_pool2d_with_switches, window=window, stride=stride, padding=padding)
    return jax.vjp(lambda x: pool(x)[0], xs)[1](g)[0]


def _ties_sample(rng, dtype, geometry, form):
    win, s, p, hw = geometry
    in_shape = (2, 2, *hw)
    g = normal(rng, (2, 2, *L.conv_output_size(hw, win, s, p)), dtype)
    cfg = f"ties: routing of x{in_shape} window{win} s{s} p{p} [{form or 'default'}]"
    return Sample((g,), {"window": win, "stride": s, "padding": p, "in_shape": in_shape}, {"formulation": form}, cfg)


def _ties(rng, dtype=_F32):
    return _ties_sample(rng, dtype, GEOMETRIES[int(rng.integers(len(GEOMETRIES)))], _form(rng))


def _ties_fixed(rng):
    for geometry, form in zip(GEOMETRIES, (None, *L.FORMULATIONS, None)):
        yield _ties_sample(rng, _F32, geometry, form)
