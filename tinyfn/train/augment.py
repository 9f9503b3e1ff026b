"""Data augmentation as pure, keyed functions ``(key, x) -> x`` on an ``(N, C, H, W)`` batch.

Each draws its randomness from ``key`` only (one draw per image), keeps the
batch's shape and dtype, and compiles under ``jit``, so it runs on the device as
part of the training step and the same key gives the same batch. Build one
with the constructors and combine them with ``compose``::

    augment = compose(random_crop(padding=2), random_flip())
    x = jax.jit(augment)(key, x)

``fill`` is in the batch's own units: after ``data.normalize`` a black border is
``(0 - mean) / std``, not 0 (which is the mean grey).

For test-time augmentation, ``identity`` and ``mirror`` are deterministic views
of a batch; ``make_eval_step(..., views=FLIP_VIEWS)`` averages the model's
class probabilities over them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from tinyfn import _checks

__all__ = ["random_crop", "random_flip", "compose", "identity", "mirror", "FLIP_VIEWS", "TTA_VIEWS"]

Augmentation = Callable[[jax.Array, jax.Array], jax.Array]


def _batch(op, x):
    return _checks.float_array("x", x, ndim=4, layout="(N, C, H, W)", op=op)


def random_flip(p: float = 0.5) -> Augmentation:
    """Mirror each image left-right (along ``W``) with probability ``p``."""
    p = _checks.rate("p", p, op="random_flip")

    def flip(key, x):
        x = _batch("random_flip", x)
        chosen = jax.random.bernoulli(key, p, (x.shape[0], 1, 1, 1))
        return jnp.where(chosen, x[..., ::-1], x)

    return flip


def random_crop(padding: int = 2, fill: float = 0.0) -> Augmentation:
    """Pad each image by ``padding`` on every side with ``fill``, then cut a random window of the original size.

    Each image moves by an offset drawn uniformly from ``[-padding, padding]`` in
    each direction (the standard CIFAR/Fashion-MNIST shift augmentation).
    """
    padding = _checks.positive_int("padding", padding, op="random_crop")

    def crop(key, x):
        x = _batch("random_crop", x)
        n, c, h, w = x.shape
        padded = jnp.pad(
            x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=jnp.asarray(fill, x.dtype)
        )
        offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

        def one(image, offset):
            return lax.dynamic_slice(image, (0, offset[0], offset[1]), (c, h, w))

        return jax.vmap(one)(padded, offsets)

    return crop


def compose(*augmentations: Augmentation) -> Augmentation:
    """Apply ``augmentations`` in order, each with its own key split from the one given."""
    for i, a in enumerate(augmentations):
        if not callable(a):
            raise TypeError(f"compose: argument {i} must be a function (key, x) -> x, got {type(a).__name__}")

    def apply(key, x):
        for k, a in zip(jax.random.split(key, len(augmentations)), augmentations):
            x = a(k, x)
        return x

    return apply


def identity(x: jax.Array) -> jax.Array:
    """The batch as it is: the first view of test-time augmentation."""
    return x


def mirror(x: jax.Array) -> jax.Array:
    """Every image of an ``(N, C, H, W)`` batch mirrored left-right (along ``W``): a deterministic view."""
    return _batch("mirror", x)[..., ::-1]


FLIP_VIEWS = (identity, mirror)
# Test-time views by name, as the command line's --tta takes them ("none": the plain model).
TTA_VIEWS = {"none": None, "flip": FLIP_VIEWS}
