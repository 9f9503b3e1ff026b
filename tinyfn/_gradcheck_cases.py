"""Random configurations of every built-in op, for ``python -m tinyfn gradcheck`` and the tests."""

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


def cases(seed: int = 0, repeats: int = 3) -> Iterator[Case]:
    """``repeats`` random configurations of each op (float32 inputs built away from kinks)."""
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        n, i, o = (int(v) for v in rng.integers(1, 6, 3))
        args = (normal(rng, (n, i)), normal(rng, (i, o)), normal(rng, (o,)))
        yield Case("linear", f"x{args[0].shape} w{args[1].shape}", L.linear, args, R.linear, ("x", "w", "b"))

    for _ in range(repeats):
        n, c, k, kern, s, p, hw = _conv_config(rng)
        args = (normal(rng, (n, c, *hw)), normal(rng, (k, c, *kern)), normal(rng, (k,)))
        kw = dict(stride=s, padding=p)
        yield Case("conv2d", f"x{args[0].shape} w{args[1].shape} s{s} p{p}", partial(L.conv2d, **kw), args, partial(R.conv2d, **kw), ("x", "w", "b"))
    # The configuration whose lax autodiff aborts XLA on jax 0.10.2: the handwritten rule must get it right.
    args = (normal(rng, (2, 3, 6, 4)), normal(rng, (3, 3, 2, 4)), normal(rng, (3,)))
    kw = dict(stride=(2, 3), padding=(1, 2))
    yield Case("conv2d", "x(2, 3, 6, 4) w(3, 3, 2, 4) s(2, 3) p(1, 2)", partial(L.conv2d, **kw), args, partial(R.conv2d, **kw), ("x", "w", "b"))

    for _ in range(repeats):
        while True:  # a deconv whose output is not empty
            n, c, k, kern, s, p, hw = _conv_config(rng)
            op = tuple(int(rng.integers(0, si)) for si in s)
            hin = tuple((hi + 2 * pi - ki) // si + 1 for hi, ki, si, pi in zip(hw, kern, s, p))
            if min(L.deconv_output_size(hin, kern, s, p, op)) >= 1:
                break
        args = (normal(rng, (n, c, *hin)), normal(rng, (c, k, *kern)), normal(rng, (k,)))
        kw = dict(stride=s, padding=p, output_padding=op)
        yield Case("deconv2d", f"x{args[0].shape} w{args[1].shape} s{s} p{p} op{op}", partial(L.deconv2d, **kw), args, partial(R.deconv2d, **kw), ("x", "w", "b"))

    for _ in range(repeats):
        win = tuple(int(v) for v in rng.integers(1, 4, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(rng.integers(0, wi // 2 + 1)) for wi in win)
        hw = tuple(int(rng.integers(wi, wi + 6)) for wi in win)
        x = distinct(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *hw))
        kw = dict(stride=s, padding=p)
        cfg = f"x{x.shape} window{win} s{s} p{p}"
        yield Case("max_pool2d", cfg, partial(L.max_pool2d, window=win, **kw), (x,), partial(R.max_pool2d, window=win, **kw), ("x",))
        yield Case(
            "max_pool2d_with_switches", cfg, partial(L.max_pool2d_with_switches, window=win, **kw), (x,),
            partial(R.max_pool2d_with_switches, window=win, **kw), ("x",),
        )  # fmt: skip
        y, switches = L.max_pool2d_with_switches(x, win, **kw)
        unpool = lambda y, sw=switches, hw=hw: L.max_unpool2d(y, sw, hw)  # noqa: E731
        ref = lambda y, sw=switches, hw=hw: R.max_unpool2d(y, sw, hw)  # noqa: E731
        yield Case("max_unpool2d", f"y{y.shape} -> {hw}", unpool, (normal(rng, y.shape),), ref, ("y",))

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
        yield Case("softmax_cross_entropy", f"logits({n}, {k})", sce, (normal(rng, (n, k)),), ref, ("logits",))
        yield Case("mse", f"pred{shape}", losses.mse, (normal(rng, shape), normal(rng, shape)), R.mse, ("pred", "target"))

    for _ in range(repeats):
        n, c = int(rng.integers(2, 4)), int(rng.integers(1, 4))
        hw = tuple(int(v) for v in rng.integers(1, 4, 2))
        shape = (n, c, *hw)
        args = (normal(rng, shape), normal(rng, (c,)), normal(rng, (c,)))
        yield Case("batch_norm", f"x{shape}", L.batch_norm, args, R.batch_norm, ("x", "gamma", "beta"))
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
