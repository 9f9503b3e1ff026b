"""What a transformer attends to: each block's attention weights, and attention rollout (Abnar & Zuidema 2020).

``attention_maps`` runs the model once (``record``) and, at every
``TransformerBlock`` or ``MultiHeadAttention`` layer, recomputes from that
layer's recorded input the weights ``P = softmax(Q Kᵀ / √D)`` its attention
used: one ``(N, H, T, T)`` array per layer, row ``i`` the weights token ``i``
gives every token. ``attention_rollout`` follows the attention down through
the layers: the residual connection keeps a token's own value, so each layer
mixes by ``A_l = ½ (mean_h P_l + I)`` (rows still summing to 1), and the
tokens that feed token ``i`` of the last layer are row ``i`` of
``R = A_L ⋯ A_2 A_1``. For a ViT, ``R[:, 0, 1:]`` (the class token's row,
without itself), reshaped to the patch grid, is the picture of what the
classification drew on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from tinyfn.layers.transformer import block_attention_probabilities
from tinyfn.visualize.record import record

__all__ = ["ATTENTION_LAYERS", "attention_maps", "attention_rollout"]

ATTENTION_LAYERS = ("TransformerBlock", "MultiHeadAttention")


def attention_maps(model, params: Any, x: jax.Array, *, model_state=None) -> list[jax.Array]:
    """The attention weights of every attention layer of ``model`` on ``x``, in forward order.

    Args:
      model: a ``serial`` model holding ``TransformerBlock`` or ``MultiHeadAttention`` layers
        at its top level (or in nested ``serial``\\ s), e.g. ``models.vit()``.
      params: its params.
      x: its input, with a batch axis (``(N, C, H, W)`` images for a ViT).
      model_state: for a model with state (run in evaluation mode).

    Returns:
      A list with one ``(N, H, T, T)`` array per attention layer; each row sums to 1
      (a fully masked row is 0).
    """
    rec = record(model, params, x, model_state=model_state)
    maps = [
        block_attention_probabilities(info.layer, info.params(params), rec.inputs[info.index])
        for info in rec.layers
        if info.layer.name in ATTENTION_LAYERS
    ]
    if not maps:
        names = ", ".join(info.layer.name for info in rec.layers)
        kinds = " or ".join(ATTENTION_LAYERS)
        raise ValueError(f"attention_maps: the model has no attention layer ({kinds}); its layers: {names}")
    return maps


def attention_rollout(maps: Sequence[jax.Array]) -> jax.Array:
    """Attention rollout (Abnar & Zuidema 2020): ``R = A_L ⋯ A_1`` with ``A_l = norm(mean_h P_l + I)``.

    Args:
      maps: ``attention_maps``' list, first layer first: each ``(N, H, T, T)``, or ``(N, T, T)``
        already averaged over heads.

    Returns:
      ``(N, T, T)``, each row summing to 1: row ``i`` is how much of each input token flows
      into token ``i`` of the last layer, through the attention and the residual paths.
    """
    if isinstance(maps, jax.Array) or not isinstance(maps, (list, tuple)) or not maps:
        got = type(maps).__name__
        raise ValueError(f"attention_rollout: maps must be a non-empty list of (N, H, T, T) arrays, got {got}")
    rollout = None
    for i, p in enumerate(maps):
        p = jnp.asarray(p)
        if p.ndim not in (3, 4) or p.shape[-1] != p.shape[-2]:
            expected = "expected (N, H, T, T) or (N, T, T)"
            raise ValueError(f"attention_rollout: maps[{i}] has shape {tuple(p.shape)}, {expected}")
        if rollout is not None and p.shape[-1] != rollout.shape[-1]:
            raise ValueError(f"attention_rollout: maps[{i}] has {p.shape[-1]} tokens, maps[0] {rollout.shape[-1]}")
        a = p.mean(axis=1) if p.ndim == 4 else p  # average the heads
        a = a + jnp.eye(a.shape[-1], dtype=a.dtype)[None]  # the residual path: each token keeps its own value
        a = a / a.sum(axis=-1, keepdims=True)  # renormalise the rows
        rollout = a if rollout is None else jnp.einsum("nij,njk->nik", a, rollout)  # later layers on the left
    return rollout
