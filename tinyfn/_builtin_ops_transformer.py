"""The smooth activations, embedding, attention and binary cross-entropy, registered in ``tinyfn.registry.OPS``.

The transformer's ops beside the convolutional ones of ``tinyfn._builtin_ops``: their samplers keep
``leaky_relu`` away from its kink, draw ``gelu``'s two forms and both attention formulations (``plain``
keeps ``P``; ``blocked`` recomputes it from the row log-sum-exp), with and without the causal mask, on
lengths that are not multiples of the block.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tinyfn import _torch_oracles as T, layers as L, losses, reference as R
from tinyfn.registry import OpSpec, Sample, normal, off_kink, register_op

_F32 = np.float32


def _pointwise(rng, dtype=_F32):
    shape = tuple(int(v) for v in rng.integers(1, 5, 2))
    return Sample((off_kink(rng, shape, dtype=dtype) * 2,), config=f"x{shape}")


def _leaky_relu(rng, dtype=_F32):
    sample = _pointwise(rng, dtype)
    slope = float(rng.choice([0.01, 0.2, 1.5]))
    return sample._replace(kwargs={"negative_slope": slope}, config=f"{sample.config} slope {slope}")


def _gelu(rng, dtype=_F32):
    sample = _pointwise(rng, dtype)
    approximate = bool(rng.integers(2))
    return sample._replace(kwargs={"approximate": approximate}, config=f"{sample.config} tanh form {approximate}")


def _bce(rng, dtype=_F32):
    n, c = (int(v) for v in rng.integers(1, 5, 2))
    logits = normal(rng, (n, c), dtype) * 3
    targets = np.asarray(rng.uniform(0, 1, (n, c)), dtype)
    return Sample((logits, targets), config=f"logits{(n, c)}")


def _embedding(rng, dtype=_F32):
    rows, features = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    ids = np.asarray(rng.integers(0, rows, (2, int(rng.integers(1, 6)))), np.int32)  # repeats: their rows sum
    return Sample((ids, normal(rng, (rows, features), dtype)), config=f"ids{ids.shape} table{(rows, features)}")


def _attention(rng, dtype=_F32):
    n, h, t, s = tuple(int(v) for v in rng.integers(1, 3, 2)) + tuple(int(v) for v in rng.integers(1, 6, 2))
    d, dv = (int(v) for v in rng.integers(1, 4, 2))
    q, k, v = (normal(rng, shape, dtype) for shape in ((n, h, t, d), (n, h, s, d), (n, h, s, dv)))
    form = L.ATTENTION_FORMULATIONS[int(rng.integers(len(L.ATTENTION_FORMULATIONS)))]
    causal = bool(rng.integers(2))
    config = f"q{q.shape} k{k.shape} v{v.shape} causal {causal} [{form}]"
    return Sample((q, k, v), {"causal": causal}, {"formulation": form, "block_size": 2}, config)


def _take_token(rng, dtype=_F32):
    n, t, e = (int(v) for v in rng.integers(1, 5, 3))
    index = int(rng.integers(-t, t))
    return Sample((normal(rng, (n, t, e), dtype),), {"index": index}, config=f"x{(n, t, e)} index {index}")


def _take_token_reference(x, index=0):
    return x[:, index]


X = ("x",)
_TOKENS = (2, 5, 8)
for _spec in (
    OpSpec(
        "leaky_relu",
        L.leaky_relu,
        R.leaky_relu,
        _leaky_relu,
        X,
        (0,),
        torch=T.leaky_relu,
        layer=L.LeakyReLU,
        input_shape=(4, 5),
    ),
    OpSpec("sigmoid", L.sigmoid, R.sigmoid, _pointwise, X, (0,), torch=T.sigmoid, layer=L.Sigmoid, input_shape=(4, 5)),
    OpSpec("tanh", L.tanh, R.tanh, _pointwise, X, (0,), torch=T.tanh, layer=L.Tanh, input_shape=(4, 5)),
    OpSpec("silu", L.silu, R.silu, _pointwise, X, (0,), torch=T.silu, layer=L.SiLU, input_shape=(4, 5)),
    OpSpec("gelu", L.gelu, R.gelu, _gelu, X, (0,), torch=T.gelu, layer=L.GELU, input_shape=(4, 5)),
    OpSpec(
        "binary_cross_entropy_with_logits",
        losses.binary_cross_entropy_with_logits,
        R.binary_cross_entropy_with_logits,
        _bce,
        ("logits", "targets"),
        (0, 1),
        torch=T.binary_cross_entropy_with_logits,
        batch_argnums=(0, 1),
    ),
    OpSpec(
        "embedding",
        L.embedding,
        R.embedding,
        _embedding,
        ("ids", "table"),
        (1,),
        torch=T.embedding,
        dtypes=("float32", "float64"),
        checks_args=False,
    ),
    OpSpec(
        "dot_product_attention",
        L.dot_product_attention,
        R.dot_product_attention,
        _attention,
        ("q", "k", "v"),
        (0, 1, 2),
        torch=T.dot_product_attention,
        dtypes=("float32", "float64"),
        batch_argnums=(0, 1, 2),
    ),
    OpSpec(
        "take_token",
        L.take_token,
        _take_token_reference,
        _take_token,
        X,
        (0,),
        torch=T.take_token,
        layer=L.TakeToken,
        input_shape=_TOKENS,
        batch_argnums=(0,),
    ),
):
    single = (0,) if len(_spec.argnames) == 1 else ()  # an elementwise op: its one argument's leading axis
    register_op(dataclasses.replace(_spec, batch_argnums=_spec.batch_argnums or single))
