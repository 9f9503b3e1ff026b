"""Embedding lookup: ``y[..., :] = table[ids[...], :]``, a gather, and its scatter-add backward rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn import _checks
from tinyfn.layers.base import Layer, make_layer
from tinyfn.layers.spec import register_layer

__all__ = ["embedding", "Embedding"]


def _valid(ids, num_embeddings):
    return (ids >= 0) & (ids < num_embeddings)


def _plain_embedding(ids, table):
    """Rows of ``table`` picked by ``ids``; NaN rows for ids outside ``[0, V)``."""
    valid = _valid(ids, table.shape[0])
    rows = table[jnp.where(valid, ids, 0)]
    return jnp.where(valid[..., None], rows, jnp.full((), jnp.nan, table.dtype))


@jax.custom_vjp
def _embedding(ids, table):
    return _plain_embedding(ids, table)


def _embedding_fwd(ids, table):  # the plain forward, so that forward mode can run through this rule
    return _plain_embedding(ids, table), (ids, table)


def _embedding_bwd(res, g):
    ids, table = res
    v, f = table.shape
    # Law 1: Y = A W with A = onehot(ids) (M, V), W = table  =>  dL/dW = Aᵀ dL/dY, i.e. each row of g added into the
    # table row its id names (repeated ids sum); ids outside [0, V) are sent past the end and dropped
    flat = jnp.where(_valid(ids, v), ids, v).reshape(-1)
    return None, jnp.zeros((v, f), g.dtype).at[flat].add(g.reshape(-1, f), mode="drop")


_embedding.defvjp(_embedding_fwd, _embedding_bwd)


def embedding(ids, table):
    """Look up rows of ``table``: ``y[..., f] = table[ids[...], f]`` (``F.embedding``).

    Args:
      ids: integer array of any shape ``(...)``, entries in ``[0, V)``.
      table: ``(V, F)`` floats.

    Returns:
      ``(..., F)``, ``table``'s dtype.

    Backward (handwritten): ``dtable = onehot(ids)ᵀ g``, a scatter-add of ``g``'s rows,
    so a repeated id receives the sum of its rows' gradients; ``ids`` get none.

    Ids out of range are refused eagerly (with their position and value), as
    PyTorch refuses them. Under ``jit`` their values are unknown at trace time:
    then their output rows are NaN (never a plausible row, so a loss turns NaN
    and a finite check stops) and they add nothing to ``dtable``.
    """
    layout = "(num_embeddings, features)"
    table = _checks.float_array("table", table, ndim=2, layout=layout, empty_batch=False, op="embedding")
    if not hasattr(ids, "dtype"):
        ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"embedding: ids must be an integer array, got dtype {ids.dtype}")
    if not isinstance(ids, jax.core.Tracer):
        host = np.asarray(ids)
        bad = np.argwhere((host < 0) | (host >= table.shape[0]))
        if bad.size:
            where = tuple(int(i) for i in bad[0])
            raise ValueError(
                f"embedding: ids[{', '.join(map(str, where))}] = {int(host[where])} is outside "
                f"[0, {table.shape[0]}) for a table of shape {tuple(table.shape)}"
            )
    return _embedding(jnp.asarray(ids).astype(jnp.int32), table)


def Embedding(num_embeddings: int, features: int, *, dtype=jnp.float32) -> Layer:
    """Embedding layer with params ``{"table": (num_embeddings, features)}`` drawn from ``N(0, 1)`` (as PyTorch).

    Input: integer ids ``(N, ...)``; output ``(N, ..., features)``.

    >>> _, p = Embedding(10, 4).init(jax.random.key(0), (None, 7))
    >>> {k: v.shape for k, v in p.items()}
    {'table': (10, 4)}
    """
    num_embeddings = _checks.positive_int("num_embeddings", num_embeddings, op="Embedding")
    features = _checks.positive_int("features", features, op="Embedding")

    def init(key, input_shape):
        shape = _checks.input_shape(input_shape, op="Embedding")
        return (*shape, features), {"table": jax.random.normal(key, (num_embeddings, features), dtype)}

    def apply(params, ids, *, key=None, train=False):
        del key, train
        return embedding(ids, params["table"])

    return make_layer("Embedding", init, apply, config={"num_embeddings": num_embeddings, "features": features})


register_layer("Embedding", Embedding)
