"""The built-in ops of ``tinyfn.layers`` and ``tinyfn.losses``, registered in ``tinyfn.registry.OPS``.

Samplers draw small random geometries; the conv, deconv and pooling samplers draw a formulation (``im2col``, ``xla``,
``direct``) too, and their fixed configurations reach every kernel path: the backend's default on a one-output-channel
filter (the direct form) and on batch chunks, every formulation on the configuration whose XLA autodiff aborts, and
each pooling geometry (tiled, tiled with a remainder, overlapping, gapped, padded), with and without exact ties.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn import _torch_oracles as T, layers as L, losses, reference as R
from tinyfn._builtin_ops_pooling import (
    _form,
    _ints,
    _max_pool2d,
    _max_pool2d_fixed,
    _max_unpool2d,
    _max_unpool2d_fixed,
    _pool_geometry,
    _ties,
    _ties_fixed,
    max_pool2d_tie_routing,
    reference_tie_routing,
)
from tinyfn.registry import OpSpec, Sample, normal, off_kink, register_op

_F32 = np.float32


# ---- linear, conv2d, deconv2d ----


def _linear(rng, dtype=_F32):
    n, i, o = _ints(rng, 1, 6, 3)
    args = (normal(rng, (n, i), dtype), normal(rng, (i, o), dtype), normal(rng, (o,), dtype))
    return Sample(args, config=f"x{(n, i)} w{(i, o)}")


def _conv_geometry(rng):
    n, c, k = _ints(rng, 1, 3, 1) + _ints(rng, 1, 5, 2)
    kern, s, p = _ints(rng, 1, 5, 2), _ints(rng, 1, 4, 2), _ints(rng, 0, 3, 2)
    hw = tuple(int(rng.integers(max(1, ki - 2 * pi), ki + 6)) for ki, pi in zip(kern, p))
    return n, c, k, kern, s, p, hw


def _conv_sample(rng, dtype, x_shape, w_shape, kw, **op_kwargs):
    k = w_shape[0]
    args = (normal(rng, x_shape, dtype), normal(rng, w_shape, dtype), normal(rng, (k,), dtype))
    tag = f"[{op_kwargs.get('formulation') or 'default'}]" + (" chunk_bytes=1000" if "chunk_bytes" in op_kwargs else "")
    cfg = f"x{x_shape} w{w_shape} " + " ".join(f"{key}{v}" for key, v in kw.items()) + f" {tag}"
    return Sample(
        args, kw, op_kwargs, cfg.replace("stride", "s").replace("output_padding", "op").replace("padding", "p")
    )


def _conv2d(rng, dtype=_F32):
    n, c, k, kern, s, p, hw = _conv_geometry(rng)
    return _conv_sample(rng, dtype, (n, c, *hw), (k, c, *kern), {"stride": s, "padding": p}, formulation=_form(rng))


def _conv2d_fixed(rng):
    # The configuration whose lax autodiff aborts XLA on jax 0.10.2: every formulation must get it right.
    kw = {"stride": (2, 3), "padding": (1, 2)}
    for form in L.FORMULATIONS:
        yield _conv_sample(rng, _F32, (2, 3, 6, 4), (3, 3, 2, 4), kw, formulation=form)
    # The backend's default: a single output channel takes the direct form; a large X* goes in batch chunks.
    kw = {"stride": (1, 2), "padding": 1}
    yield _conv_sample(rng, _F32, (2, 2, 5, 6), (1, 2, 3, 3), kw)
    yield _conv_sample(rng, _F32, (5, 2, 6, 5), (3, 2, 3, 2), kw, chunk_bytes=1000)


def _deconv_sample(rng, dtype, x_shape, w_shape, kw, **op_kwargs):
    s = _conv_sample(rng, dtype, x_shape, w_shape, kw, **op_kwargs)
    return s._replace(args=(*s.args[:2], normal(rng, (w_shape[1],), dtype)))


def _deconv2d(rng, dtype=_F32):
    while True:  # a deconv whose output is not empty
        n, c, k, kern, s, p, hw = _conv_geometry(rng)
        op = tuple(int(rng.integers(0, si)) for si in s)
        hin = L.conv_output_size(hw, kern, s, p)
        if min(hin) >= 1 and min(L.deconv_output_size(hin, kern, s, p, op)) >= 1:
            break
    kw = {"stride": s, "padding": p, "output_padding": op}
    return _deconv_sample(rng, dtype, (n, c, *hin), (c, k, *kern), kw, formulation=_form(rng))


def _deconv2d_fixed(rng):
    kw = {"stride": (2, 1), "padding": (0, 1), "output_padding": (1, 0)}
    for form in (*L.FORMULATIONS, None):
        yield _deconv_sample(rng, _F32, (2, 1, 3, 4), (1, 2, 3, 3), kw, formulation=form)
    yield _deconv_sample(rng, _F32, (5, 3, 4, 4), (3, 2, 3, 3), kw, chunk_bytes=1000)


# ---- activations, dropout, losses ----


def _elementwise(rng, dtype=_F32):
    shape = _ints(rng, 1, 5, 3)
    return Sample((off_kink(rng, shape, dtype=dtype),), config=f"x{shape}")


def _axis_op(rng, dtype=_F32):
    shape, axis = _ints(rng, 1, 5, 3), int(rng.integers(0, 3))
    return Sample((normal(rng, shape, dtype),), {"axis": axis}, config=f"x{shape} axis={axis}")


def _dropout(rng, dtype=_F32):
    shape, rate = _ints(rng, 1, 5, 3), float(rng.choice([0.1, 0.5, 0.8]))
    key = jax.random.key(int(rng.integers(1 << 30)))
    return Sample((key, normal(rng, shape, dtype)), {"rate": rate, "train": True}, config=f"x{shape} rate={rate}")


def _sce(rng, dtype=_F32):
    n, k = int(rng.integers(1, 6)), int(rng.integers(2, 6))
    labels = jnp.asarray(rng.integers(0, k, n), jnp.int32)
    smoothing = float(rng.choice([0.0, 0.1]))
    cfg = f"logits({n}, {k})" + (f" label_smoothing={smoothing}" if smoothing else "")
    return Sample((normal(rng, (n, k), dtype), labels), {"label_smoothing": smoothing}, config=cfg)


def _mse(rng, dtype=_F32):
    shape = _ints(rng, 1, 5, 3)
    return Sample((normal(rng, shape, dtype), normal(rng, shape, dtype)), config=f"pred{shape}")


# ---- normalisation, average pooling, fan-in ----


def _norm_shape(rng):
    # W >= 3: every normalized group (N·H·W for batch norm, W or H·W for layer norm) has 3 entries or more. A group
    # of two normalizes to ±1 whatever x is: its Jacobian vanishes up to eps, and a float32 comparison of it would
    # compare rounding errors only.
    return (int(rng.integers(2, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(3, 5)))


def _batch_norm(rng, dtype=_F32):
    shape = _norm_shape(rng)
    c = (shape[1],)
    return Sample((normal(rng, shape, dtype), normal(rng, c, dtype), normal(rng, c, dtype)), config=f"x{shape}")


def _bn_inference(rng, dtype=_F32):
    shape = _norm_shape(rng)
    c = (shape[1],)
    var = jnp.asarray(rng.uniform(0.5, 2.0, c), dtype)
    args = (normal(rng, shape, dtype), normal(rng, c, dtype), var, normal(rng, c, dtype), normal(rng, c, dtype))
    return Sample(args, config=f"x{shape}")


def _layer_norm(rng, dtype=_F32):
    shape, k = _norm_shape(rng), int(rng.integers(1, 3))
    trailing = shape[4 - k :]
    args = (normal(rng, shape, dtype), normal(rng, trailing, dtype), normal(rng, trailing, dtype))
    return Sample(args, {"normalized_ndim": k}, config=f"x{shape} normalized_ndim={k}")


def _avg_pool2d(rng, dtype=_F32):
    win, s, p, hw = _pool_geometry(rng, extra=5)
    include = bool(rng.integers(0, 2))
    x = normal(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *hw), dtype)
    kw = {"window": win, "stride": s, "padding": p, "count_include_pad": include}
    return Sample((x,), kw, config=f"x{tuple(x.shape)} window{win} s{s} p{p} count_include_pad={include}")


def _image(rng, dtype=_F32):
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *_ints(rng, 1, 5, 2))
    return Sample((normal(rng, shape, dtype),), config=f"x{shape}")


def _add(rng, dtype=_F32):
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *_ints(rng, 1, 5, 2))
    xs = tuple(normal(rng, shape, dtype) for _ in range(int(rng.integers(2, 4))))
    return Sample((xs,), config=f"{len(xs)} × x{shape}")


def _concat(rng, dtype=_F32):
    n, hw = int(rng.integers(1, 3)), _ints(rng, 1, 5, 2)
    xs = tuple(normal(rng, (n, int(rng.integers(1, 4)), *hw), dtype) for _ in range(int(rng.integers(2, 4))))
    return Sample((xs,), config=" ".join(f"x{tuple(a.shape)}" for a in xs))


# ---- the table ----

X, XGB = ("x",), ("x", "gamma", "beta")
_IMAGE_LAYER = (2, 3, 6, 6)
_BATCH = {  # the arguments whose leading axis is the batch (softmax's sampled axis may be 0: not listed)
    "linear": (0,),
    "conv2d": (0,),
    "deconv2d": (0,),
    "max_pool2d": (0,),
    "max_pool2d_with_switches": (0,),
    "max_unpool2d": (0, 1),
    "relu": (0,),
    "flatten": (0,),
    "dropout": (1,),
    "softmax_cross_entropy": (0, 1),
    "mse": (0, 1),
    "batch_norm": (0,),
    "batch_norm_with_stats": (0,),
    "batch_norm_inference": (0,),
    "layer_norm": (0,),
    "avg_pool2d": (0,),
    "global_avg_pool2d": (0,),
    "add_arrays": (0,),
    "concat_arrays": (0,),
}
for _spec in (
    OpSpec(
        "linear",
        L.linear,
        R.linear,
        _linear,
        ("x", "w", "b"),
        (0, 1, 2),
        torch=T.linear,
        layer=lambda: L.Linear(3),
        input_shape=(4, 5),
    ),
    OpSpec(
        "conv2d",
        L.conv2d,
        R.conv2d,
        _conv2d,
        ("x", "w", "b"),
        (0, 1, 2),
        torch=T.conv2d,
        fixed=_conv2d_fixed,
        layer=lambda: L.Conv2D(3, 3, stride=2, padding=1),
        input_shape=_IMAGE_LAYER,
    ),
    OpSpec(
        "deconv2d",
        L.deconv2d,
        R.deconv2d,
        _deconv2d,
        ("x", "w", "b"),
        (0, 1, 2),
        torch=T.deconv2d,
        fixed=_deconv2d_fixed,
        layer=lambda: L.Deconv2D(3, 3, stride=2, output_padding=1),
        input_shape=_IMAGE_LAYER,
    ),
    OpSpec(
        "max_pool2d",
        L.max_pool2d,
        R.max_pool2d,
        _max_pool2d,
        X,
        (0,),
        torch=T.max_pool2d,
        fixed=_max_pool2d_fixed,
        layer=lambda: L.MaxPool2D(2, stride=1),
        input_shape=_IMAGE_LAYER,
    ),
    OpSpec(
        "max_pool2d_with_switches",
        L.max_pool2d_with_switches,
        R.max_pool2d_with_switches,
        _max_pool2d,
        X,
        (0,),
        torch=T.max_pool2d_with_switches,
        fixed=_max_pool2d_fixed,
    ),
    OpSpec(
        "max_unpool2d",
        L.max_unpool2d,
        R.max_unpool2d,
        _max_unpool2d,
        ("y", "switches"),
        (0,),
        fixed=_max_unpool2d_fixed,
    ),
    OpSpec(
        "max_pool2d_ties",
        max_pool2d_tie_routing,
        reference_tie_routing,
        _ties,
        ("g",),
        (0,),
        fixed=_ties_fixed,
        checks_args=False,
        doc="max_pool2d's VJP on exact ties: the first maximum wins in every formulation",
    ),
    OpSpec("relu", L.relu, R.relu, _elementwise, X, (0,), torch=T.relu, layer=L.ReLU, input_shape=(4, 5)),
    OpSpec("softmax", L.softmax, R.softmax, _axis_op, X, (0,), torch=T.softmax, layer=L.Softmax, input_shape=(4, 5)),
    OpSpec(
        "log_softmax",
        L.log_softmax,
        R.log_softmax,
        _axis_op,
        X,
        (0,),
        torch=T.log_softmax,
        layer=lambda: L.LogSoftmax(axis=0),
        input_shape=(4, 5),
    ),
    OpSpec(
        "flatten",
        L.flatten,
        R.flatten,
        _image,
        X,
        (0,),
        torch=T.flatten,
        checks_args=False,
        layer=L.Flatten,
        input_shape=_IMAGE_LAYER,
        doc="a reshape: JAX's own rule (no custom_vjp)",
    ),
    OpSpec(
        "dropout", L.dropout, R.dropout, _dropout, ("key", "x"), (1,), layer=lambda: L.Dropout(0.5), input_shape=(4, 5)
    ),
    OpSpec(
        "softmax_cross_entropy",
        losses.softmax_cross_entropy,
        R.softmax_cross_entropy,
        _sce,
        ("logits", "labels"),
        (0,),
        torch=T.softmax_cross_entropy,
    ),
    OpSpec("mse", losses.mse, R.mse, _mse, ("pred", "target"), (0, 1), torch=T.mse),
    OpSpec("batch_norm", L.batch_norm, R.batch_norm, _batch_norm, XGB, (0, 1, 2), torch=T.batch_norm),
    OpSpec(
        "batch_norm_with_stats",
        L.batch_norm_with_stats,
        R.batch_norm_with_stats,
        _batch_norm,
        XGB,
        (0, 1, 2),
        torch=T.batch_norm_with_stats,
        error_name="batch_norm",
        float32_outputs=(1, 2),  # the batch mean and variance feed the running estimates: float32 for float16 inputs
    ),
    OpSpec(
        "batch_norm_inference",
        L.batch_norm_inference,
        R.batch_norm_inference,
        _bn_inference,
        ("x", "mean", "var", "gamma", "beta"),
        (0, 1, 2, 3, 4),
        torch=T.batch_norm_inference,
    ),
    OpSpec("layer_norm", L.layer_norm, R.layer_norm, _layer_norm, XGB, (0, 1, 2), torch=T.layer_norm),
    OpSpec(
        "avg_pool2d",
        L.avg_pool2d,
        R.avg_pool2d,
        _avg_pool2d,
        X,
        (0,),
        torch=T.avg_pool2d,
        layer=lambda: L.AvgPool2D(2),
        input_shape=_IMAGE_LAYER,
    ),
    OpSpec(
        "global_avg_pool2d",
        L.global_avg_pool2d,
        R.global_avg_pool2d,
        _image,
        X,
        (0,),
        torch=T.global_avg_pool2d,
        layer=L.GlobalAvgPool2D,
        input_shape=_IMAGE_LAYER,
    ),
    OpSpec("add_arrays", L.add_arrays, R.add_arrays, _add, ("xs",), (0,), torch=T.add_arrays, error_name="add"),
    OpSpec(
        "concat_arrays",
        L.concat_arrays,
        R.concat_arrays,
        _concat,
        ("xs",),
        (0,),
        torch=T.concat_arrays,
        error_name="concat",
    ),
):
    register_op(dataclasses.replace(_spec, batch_argnums=_BATCH.get(_spec.name, ())))
