"""Find, over a dataset, the images and positions that excite each feature map most."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn.visualize.record import record, resolve_layer

__all__ = ["TopActivations", "top_activations"]


class TopActivations(NamedTuple):
    """For each requested channel, its ``k`` strongest images (one activation per image, the map's maximum)."""

    layer: str
    channels: tuple[int, ...]
    values: np.ndarray  # (len(channels), k) activation values, strongest first
    images: np.ndarray  # (len(channels), k) image indices into the dataset
    positions: np.ndarray  # (len(channels), k, 2) (h, w) of the maximum; zeros for (N, F) layers


def top_activations(
    model, params, images, layer, channels=None, k: int = 9, *, batch_size: int = 500, model_state=None
) -> TopActivations:
    """Scan ``images (N, C, H, W)`` in jitted batches and keep, per channel, the ``k`` images whose map peaks highest.

    Each image counts once per channel (at its map's maximum, the first in
    row-major order on ties); among images, ties go to the lower index.
    ``channels`` defaults to all of the layer's channels. A stateful model runs
    in evaluation mode with its ``model_state``.
    """
    info = resolve_layer(model, layer)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    n = images.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of images ({n}), got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    batch_size = min(batch_size, n)
    out = jax.eval_shape(
        lambda p, x: record(model, p, x, upto=info.index, model_state=model_state).outputs[-1],
        params,
        jnp.asarray(images[:1]),
    )
    num_channels = out.shape[1]
    channels = tuple(range(num_channels)) if channels is None else tuple(int(c) for c in channels)
    for c in channels:
        if not 0 <= c < num_channels:
            raise ValueError(f"channel {c} is out of range for layer {info.name!r} with {num_channels} channels")
    chan = jnp.asarray(channels, jnp.int32)

    @jax.jit
    def peaks(params, x):
        a = record(model, params, x, upto=info.index, model_state=model_state).outputs[-1][:, chan]
        flat = a.reshape(a.shape[0], a.shape[1], -1)
        arg = jnp.argmax(flat, axis=-1)
        return jnp.take_along_axis(flat, arg[..., None], axis=-1)[..., 0], arg

    best = np.empty((n, len(channels)), np.float32)
    where = np.empty((n, len(channels)), np.int64)
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        m = len(batch)
        if m < batch_size:  # pad the last batch: one compiled shape
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - m, axis=0)])
        v, a = peaks(params, jnp.asarray(batch))
        best[start : start + m], where[start : start + m] = np.asarray(v)[:m], np.asarray(a)[:m]

    order = np.argsort(-best, axis=0, kind="stable")[:k].T  # (channels, k)
    values = np.take_along_axis(best.T, order, axis=1)
    flat_pos = np.take_along_axis(where.T, order, axis=1)
    width = out.shape[3] if len(out.shape) == 4 else 1
    positions = (
        np.stack([flat_pos // width, flat_pos % width], axis=-1)
        if len(out.shape) == 4
        else np.zeros((*order.shape, 2), np.int64)
    )
    return TopActivations(info.name, channels, values, order, positions)
