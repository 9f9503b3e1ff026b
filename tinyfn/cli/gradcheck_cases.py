"""Random configurations of every built-in op, for ``python -m tinyfn gradcheck`` and the tests.

The conv, deconv and pooling cases take every formulation in turn (``[im2col]``, ``[xla]``,
``[direct]`` in their config), and fixed cases reach every kernel path: the backend's default
(``[default]``) on a one-output-channel filter (the direct form) and on batch chunks, and each pooling
geometry (tiled, tiled with a remainder, overlapping, gapped, padded), with and without exact ties.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterator, NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from tinyfn import layers as L
from tinyfn import losses, reference as R


class Case(NamedTuple):
    op: str
    config: str
    f: Callable
    args: tuple
    reference: Callable
    argnames: tuple


def distinct(rng, shape, gap=0.05, dtype=np.float32):
    """Values that are pairwise at least ``gap`` apart (no max-pool ties within ``eps``), shuffled."""
    size = int(np.prod(shape))
    return jnp.asarray((rng.permutation(size) - size / 2) * gap, dtype).reshape(shape)


def off_kink(rng, shape, margin=0.1, dtype=np.float32):
    """Normal values pushed at least ``margin`` away from 0 (no ReLU kink within ``eps``)."""
    z = rng.standard_normal(shape)
    return jnp.asarray(np.sign(z) * (margin + np.abs(z)), dtype)


def normal(rng, shape, dtype=np.float32):
    return jnp.asarray(rng.standard_normal(shape), dtype)


def _conv_config(rng):
    n, c, k = rng.integers(1, 3), rng.integers(1, 5), rng.integers(1, 5)
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    sh, sw = (int(v) for v in rng.integers(1, 4, 2))
    ph, pw = (int(v) for v in rng.integers(0, 3, 2))
    h = int(rng.integers(max(1, kh - 2 * ph), kh + 6))
    w = int(rng.integers(max(1, kw - 2 * pw), kw + 6))
    return int(n), int(c), int(k), (kh, kw), (sh, sw), (ph, pw), (h, w)


def _tie_routing(window, stride, padding, shape, formulation=None):
    """Max-pool's routing on an input full of exact ties, as a function of the cotangent ``g``.

    ``g -> dx`` is linear (finite differences are exact); which input each ``g`` reaches is decided
    by the first-maximum rule, so the reference (the gather reference's autodiff) checks the ties.
    """
    x = np.zeros(shape)
    x[..., ::2, 1::2] = 1.0  # ones on a sparse grid, zeros elsewhere: most windows hold a two-or-more-way tie
    kw = dict(stride=stride, padding=padding)

    def route(g, pool, **extra):
        xs = jnp.asarray(x, g.dtype)  # ties are exact in any float dtype
        return jax.vjp(lambda x: pool(x, window, **kw, **extra), xs)[1](g)[0]

    f = partial(route, pool=L.max_pool2d, formulation=formulation)
    return f, partial(route, pool=lambda x, window, **kw: R.max_pool2d_with_switches(x, window, **kw)[0])


def _pool_case(rng, x, win, s, p, form):
    kw = dict(stride=s, padding=p)
    tag = f" [{form or 'default'}]"
    cfg = f"x{x.shape} window{win} s{s} p{p}" + tag
    yield Case("max_pool2d", cfg, partial(L.max_pool2d, window=win, formulation=form, **kw), (x,), partial(R.max_pool2d, window=win, **kw), ("x",))
    yield Case(
        "max_pool2d_with_switches", cfg, partial(L.max_pool2d_with_switches, window=win, formulation=form, **kw), (x,),
        partial(R.max_pool2d_with_switches, window=win, **kw), ("x",),
    )  # fmt: skip
    hw = x.shape[2:]
    y, switches = L.max_pool2d_with_switches(x, win, formulation=form, **kw)
    unpool = lambda y, sw=switches, hw=hw: L.max_unpool2d(y, sw, hw)  # noqa: E731
    ref = lambda y, sw=switches, hw=hw: R.max_unpool2d(y, sw, hw)  # noqa: E731
    yield Case("max_unpool2d", f"y{y.shape} -> {hw}" + tag, unpool, (normal(rng, y.shape),), ref, ("y",))


def cases(seed: int = 0, repeats: int = 3) -> Iterator[Case]:
    """``repeats`` random configurations of each op (float32 inputs built away from kinks)."""
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        n, i, o = (int(v) for v in rng.integers(1, 6, 3))
        args = (normal(rng, (n, i)), normal(rng, (i, o)), normal(rng, (o,)))
        yield Case("linear", f"x{args[0].shape} w{args[1].shape}", L.linear, args, R.linear, ("x", "w", "b"))

    for i in range(repeats):
        n, c, k, kern, s, p, hw = _conv_config(rng)
        form = L.FORMULATIONS[i % len(L.FORMULATIONS)]
        args = (normal(rng, (n, c, *hw)), normal(rng, (k, c, *kern)), normal(rng, (k,)))
        kw = dict(stride=s, padding=p)
        yield Case("conv2d", f"x{args[0].shape} w{args[1].shape} s{s} p{p} [{form}]", partial(L.conv2d, formulation=form, **kw), args, partial(R.conv2d, **kw), ("x", "w", "b"))
    # The configuration whose lax autodiff aborts XLA on jax 0.10.2: every formulation must get it right.
    args = (normal(rng, (2, 3, 6, 4)), normal(rng, (3, 3, 2, 4)), normal(rng, (3,)))
    kw = dict(stride=(2, 3), padding=(1, 2))
    for form in L.FORMULATIONS:
        yield Case("conv2d", f"x(2, 3, 6, 4) w(3, 3, 2, 4) s(2, 3) p(1, 2) [{form}]", partial(L.conv2d, formulation=form, **kw), args, partial(R.conv2d, **kw), ("x", "w", "b"))
    # The backend's default: a single output channel takes the direct form; a large X* goes in batch chunks.
    kw = dict(stride=(1, 2), padding=1)
    args = (normal(rng, (2, 2, 5, 6)), normal(rng, (1, 2, 3, 3)), normal(rng, (1,)))
    yield Case("conv2d", "x(2, 2, 5, 6) w(1, 2, 3, 3) s(1, 2) p1 [default]", partial(L.conv2d, **kw), args, partial(R.conv2d, **kw), ("x", "w", "b"))
    args = (normal(rng, (5, 2, 6, 5)), normal(rng, (3, 2, 3, 2)), normal(rng, (3,)))
    yield Case("conv2d", "x(5, 2, 6, 5) w(3, 2, 3, 2) s(1, 2) p1 chunk_bytes=1000 [default]", partial(L.conv2d, chunk_bytes=1000, **kw), args, partial(R.conv2d, **kw), ("x", "w", "b"))
    kw = dict(stride=(2, 1), padding=(0, 1), output_padding=(1, 0))
    args = (normal(rng, (2, 1, 3, 4)), normal(rng, (1, 2, 3, 3)), normal(rng, (2,)))
    yield Case("deconv2d", "x(2, 1, 3, 4) w(1, 2, 3, 3) s(2, 1) p(0, 1) op(1, 0) [default]", partial(L.deconv2d, **kw), args, partial(R.deconv2d, **kw), ("x", "w", "b"))
    args = (normal(rng, (5, 3, 4, 4)), normal(rng, (3, 2, 3, 3)), normal(rng, (2,)))
    yield Case("deconv2d", "x(5, 3, 4, 4) w(3, 2, 3, 3) s(2, 1) p(0, 1) op(1, 0) chunk_bytes=1000 [default]", partial(L.deconv2d, chunk_bytes=1000, **kw), args, partial(R.deconv2d, **kw), ("x", "w", "b"))

    for i in range(repeats):
        form = L.FORMULATIONS[i % len(L.FORMULATIONS)]
        while True:  # a deconv whose output is not empty
            n, c, k, kern, s, p, hw = _conv_config(rng)
            op = tuple(int(rng.integers(0, si)) for si in s)
            hin = tuple((hi + 2 * pi - ki) // si + 1 for hi, ki, si, pi in zip(hw, kern, s, p))
            if min(L.deconv_output_size(hin, kern, s, p, op)) >= 1:
                break
        args = (normal(rng, (n, c, *hin)), normal(rng, (c, k, *kern)), normal(rng, (k,)))
        kw = dict(stride=s, padding=p, output_padding=op)
        yield Case("deconv2d", f"x{args[0].shape} w{args[1].shape} s{s} p{p} op{op} [{form}]", partial(L.deconv2d, formulation=form, **kw), args, partial(R.deconv2d, **kw), ("x", "w", "b"))

    for i in range(repeats):
        win = tuple(int(v) for v in rng.integers(1, 4, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(rng.integers(0, wi // 2 + 1)) for wi in win)
        hw = tuple(int(rng.integers(wi, wi + 6)) for wi in win)
        x = distinct(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *hw))
        yield from _pool_case(rng, x, win, s, p, L.FORMULATIONS[i % len(L.FORMULATIONS)])
    # Every routing geometry with the backend's default: tiled, tiled with a remainder (5 rows, windows of 2:
    # the last row is in no window), overlapping, gapped, padded; then the same geometries on exact ties.
    geometries = [((2, 2), (2, 2), (0, 0), (4, 6)), ((2, 2), (2, 2), (0, 0), (5, 5)), ((3, 2), (1, 2), (0, 0), (5, 4)),
                  ((2, 2), (3, 3), (0, 0), (7, 6)), ((3, 3), (2, 2), (1, 1), (5, 6))]  # fmt: skip
    for win, s, p, hw in geometries:
        yield from _pool_case(rng, distinct(rng, (2, 2, *hw)), win, s, p, None)
    for (win, s, p, hw), form in zip(geometries, (None, *L.FORMULATIONS, None)):
        f, ref = _tie_routing(win, s, p, (2, 2, *hw), form)
        ho, wo = L.conv_output_size(hw, win, s, p)
        cfg = f"ties: routing of x(2, 2, {hw[0]}, {hw[1]}) window{win} s{s} p{p} [{form or 'default'}]"
        yield Case("max_pool2d", cfg, f, (normal(rng, (2, 2, ho, wo)),), ref, ("g",))

    for _ in range(repeats):
        shape = tuple(int(v) for v in rng.integers(1, 5, 3))
        yield Case("relu", f"x{shape}", L.relu, (off_kink(rng, shape),), R.relu, ("x",))
        axis = int(rng.integers(0, 3))
        yield Case("softmax", f"x{shape} axis={axis}", partial(L.softmax, axis=axis), (normal(rng, shape),), partial(R.softmax, axis=axis), ("x",))
        yield Case("log_softmax", f"x{shape} axis={axis}", partial(L.log_softmax, axis=axis), (normal(rng, shape),), partial(R.log_softmax, axis=axis), ("x",))
        rate = float(rng.choice([0.1, 0.5, 0.8]))
        key = jax.random.key(int(rng.integers(1 << 30)))
        drop = lambda x, key=key, rate=rate: L.dropout(key, x, rate, train=True)  # noqa: E731
        ref = lambda x, key=key, rate=rate: R.dropout(key, x, rate, train=True)  # noqa: E731
        yield Case("dropout", f"x{shape} rate={rate}", drop, (normal(rng, shape),), ref, ("x",))
        n, k = int(rng.integers(1, 6)), int(rng.integers(2, 6))
        labels = jnp.asarray(rng.integers(0, k, n), jnp.int32)
        sce = lambda z, labels=labels: losses.softmax_cross_entropy(z, labels)  # noqa: E731
        ref = lambda z, labels=labels: R.softmax_cross_entropy(z, labels)  # noqa: E731
        logits = normal(rng, (n, k))
        yield Case("softmax_cross_entropy", f"logits({n}, {k})", sce, (logits,), ref, ("logits",))
        sce = lambda z, labels=labels: losses.softmax_cross_entropy(z, labels, label_smoothing=0.1)  # noqa: E731
        ref = lambda z, labels=labels: R.softmax_cross_entropy(z, labels, label_smoothing=0.1)  # noqa: E731
        yield Case("softmax_cross_entropy", f"logits({n}, {k}) label_smoothing=0.1", sce, (logits,), ref, ("logits",))
        yield Case("mse", f"pred{shape}", losses.mse, (normal(rng, shape), normal(rng, shape)), R.mse, ("pred", "target"))

    for _ in range(repeats):
        n, c = int(rng.integers(2, 4)), int(rng.integers(1, 4))
        # W >= 3: every normalized group (N·H·W for batch norm, W or H·W for layer norm) has 3 entries or more. A
        # group of two normalizes to ±1 whatever x is: its Jacobian vanishes up to eps, and a float32 comparison of
        # it would compare rounding errors only.
        hw = (int(rng.integers(1, 4)), int(rng.integers(3, 5)))
        shape = (n, c, *hw)
        args = (normal(rng, shape), normal(rng, (c,)), normal(rng, (c,)))
        yield Case("batch_norm", f"x{shape}", L.batch_norm, args, R.batch_norm, ("x", "gamma", "beta"))
        yield Case("batch_norm_with_stats", f"x{shape}", L.batch_norm_with_stats, args, R.batch_norm_with_stats, ("x", "gamma", "beta"))
        stats = (normal(rng, (c,)), jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32))
        args = (normal(rng, shape), *stats, normal(rng, (c,)), normal(rng, (c,)))
        yield Case("batch_norm_inference", f"x{shape}", L.batch_norm_inference, args, R.batch_norm_inference, ("x", "mean", "var", "gamma", "beta"))
        k = int(rng.integers(1, 3))
        trailing = shape[4 - k :]
        args = (normal(rng, shape), normal(rng, trailing), normal(rng, trailing))
        ln, ref = partial(L.layer_norm, normalized_ndim=k), partial(R.layer_norm, normalized_ndim=k)
        yield Case("layer_norm", f"x{shape} normalized_ndim={k}", ln, args, ref, ("x", "gamma", "beta"))

    for _ in range(repeats):
        win = tuple(int(v) for v in rng.integers(1, 4, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(rng.integers(0, wi // 2 + 1)) for wi in win)
        hw = tuple(int(rng.integers(wi, wi + 5)) for wi in win)
        include = bool(rng.integers(0, 2))
        x = normal(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *hw))
        kw = dict(window=win, stride=s, padding=p, count_include_pad=include)
        yield Case("avg_pool2d", f"x{x.shape} window{win} s{s} p{p} count_include_pad={include}", partial(L.avg_pool2d, **kw), (x,), partial(R.avg_pool2d, **kw), ("x",))
        yield Case("global_avg_pool2d", f"x{x.shape}", L.global_avg_pool2d, (x,), R.global_avg_pool2d, ("x",))
        parts = tuple(normal(rng, (x.shape[0], int(rng.integers(1, 4)), *hw)) for _ in range(int(rng.integers(2, 4))))
        yield Case("concat", " ".join(f"x{a.shape}" for a in parts), L.concat_arrays, (parts,), R.concat_arrays, ("xs",))
        same = tuple(normal(rng, x.shape) for _ in range(len(parts)))
        yield Case("add", f"{len(same)} × x{x.shape}", L.add_arrays, (same,), R.add_arrays, ("xs",))
