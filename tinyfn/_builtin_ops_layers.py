"""Reshape, 1-D convolution, group norm and nearest upsampling, registered in ``tinyfn.registry.OPS``.

The samplers draw ``-1`` in reshape's target, every conv formulation and dilations 1 and 2 for ``conv1d``,
``num_groups`` from 1 (layer norm over ``(C, ...)``) to ``C`` (instance norm) with at least 3 positions (a
group of two normalises to ±1 whatever ``x`` is, and its Jacobian would compare rounding errors only), and per-axis
upsampling factors.
"""

from __future__ import annotations

import numpy as np

from tinyfn import _torch_oracles as T, layers as L, reference as R
from tinyfn.registry import OpSpec, Sample, normal, register_op

_F32 = np.float32


def _ints(rng, low, high, n):
    return tuple(int(v) for v in rng.integers(low, high, n))


def _reshape(rng, dtype=_F32):
    n, a, b, c = _ints(rng, 1, 4, 4)
    shape = [b * c, a] if rng.integers(2) else [c, a * b]
    if rng.integers(2):
        shape[int(rng.integers(2))] = -1
    kw = {"shape": tuple(shape)}
    return Sample((normal(rng, (n, a, b, c), dtype),), kw, config=f"x{(n, a, b, c)} -> {tuple(shape)}")


def _conv1d(rng, dtype=_F32):
    n, c, o = _ints(rng, 1, 4, 3)
    k, s, p, d = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(0, 2)), int(rng.integers(1, 3))
    length = int(rng.integers(max(1, d * (k - 1) + 1 - 2 * p), d * (k - 1) + 6))
    args = (normal(rng, (n, c, length), dtype), normal(rng, (o, c, k), dtype), normal(rng, (o,), dtype))
    form = L.FORMULATIONS[int(rng.integers(len(L.FORMULATIONS)))]
    kw = {"stride": s, "padding": p, "dilation": d}
    cfg = f"x{(n, c, length)} w{(o, c, k)} s{s} p{p} d{d} [{form}]"
    return Sample(args, kw, {"formulation": form}, cfg)


def _group_norm(rng, dtype=_F32):
    groups, per_group = _ints(rng, 1, 4, 2)
    c = groups * per_group
    spatial = (int(rng.integers(3, 5)),) + _ints(rng, 1, 3, int(rng.integers(0, 2)))
    shape = (int(rng.integers(1, 4)), c, *spatial)
    args = (normal(rng, shape, dtype), normal(rng, (c,), dtype), normal(rng, (c,), dtype))
    return Sample(args, {"num_groups": groups}, config=f"x{shape} num_groups={groups}")


def _upsample(rng, dtype=_F32):
    shape = (*_ints(rng, 1, 3, 2), *_ints(rng, 1, 4, 2))
    scale = _ints(rng, 1, 4, 2) if rng.integers(2) else int(rng.integers(1, 4))
    return Sample((normal(rng, shape, dtype),), {"scale_factor": scale}, config=f"x{shape} scale_factor={scale}")


X = ("x",)
for _spec in (
    OpSpec(
        "reshape",
        L.reshape,
        R.reshape,
        _reshape,
        X,
        (0,),
        torch=T.reshape,
        checks_args=False,
        layer=lambda: L.Reshape((-1, 2)),
        input_shape=(2, 3, 4, 4),
        batch_argnums=(0,),
        doc="a reshape per example: Law 1 with A the identity between the flattenings",
    ),
    OpSpec(
        "conv1d",
        L.conv1d,
        R.conv1d,
        _conv1d,
        ("x", "w", "b"),
        (0, 1, 2),
        torch=T.conv1d,
        layer=lambda: L.Conv1D(3, 3, stride=2, padding=1, dilation=2),
        input_shape=(2, 3, 9),
        batch_argnums=(0,),
    ),
    OpSpec(
        "group_norm",
        L.group_norm,
        R.group_norm,
        _group_norm,
        ("x", "gamma", "beta"),
        (0, 1, 2),
        torch=T.group_norm,
        layer=lambda: L.GroupNorm(2),
        input_shape=(2, 4, 3, 3),
        batch_argnums=(0,),
    ),
    OpSpec(
        "upsample_nearest2d",
        L.upsample_nearest2d,
        R.upsample_nearest2d,
        _upsample,
        X,
        (0,),
        torch=T.upsample_nearest2d,
        layer=lambda: L.Upsample((2, 3)),
        input_shape=(2, 3, 4, 4),
        batch_argnums=(0,),
    ),
):
    register_op(_spec)
