"""Data augmentation as pure, keyed functions ``(key, x) -> x`` on an ``(N, C, H, W)`` batch.

Each draws its randomness from ``key`` only (one draw per image), keeps the
batch's shape and dtype, and compiles under ``jit``, so it runs on the device as
part of the training step and the same key gives the same batch. Build one
with the constructors and combine them with ``compose``::

    augment = compose(random_crop(padding=2), random_flip())
    x = jax.jit(augment)(key, x)

``fill`` is in the batch's own units: after ``data.normalize`` a black border is
``(0 - mean) / std``, not 0 (which is the mean grey).

Progressive resizing (training the first epochs on smaller images, which are cheaper to step through, then the
last ones at full size) is a schedule of augmentations by epoch for ``fit``::

    augment = by_epoch({0: compose(random_crop(1), random_flip(), resize(16)),
                        5: compose(random_crop(1), random_flip())})

``resize`` is the one augmentation here that changes the batch's shape; the model must take either size (global
average pooling before the classifier does).

For test-time augmentation, ``identity`` and ``mirror`` are deterministic views
of a batch; ``make_eval_step(..., views=FLIP_VIEWS)`` averages the model's
class probabilities over them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax import lax

from tinyfn import _checks

__all__ = [
    "random_crop",
    "random_flip",
    "resize",
    "compose",
    "by_epoch",
    "progressive_resizing",
    "EpochSchedule",
    "identity",
    "mirror",
    "FLIP_VIEWS",
    "TTA_VIEWS",
]

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


def resize(size: int) -> Augmentation:
    """Scale every image of the batch to ``size × size`` (bilinear; antialiased when shrinking): ``(N, C, H, W) ->
    (N, C, size, size)``.

    Deterministic (the key is unused). It changes the batch's shape, so the model
    sees another resolution: with global average pooling before its classifier
    its params fit both, and ``by_epoch`` trains the early epochs small and the
    last ones at full size (progressive resizing). The step compiles once per size.
    """
    size = _checks.positive_int("size", size, op="resize")

    def scale(key, x):
        del key
        x = _batch("resize", x)
        n, c, h, w = x.shape
        if (h, w) == (size, size):
            return x
        return jax.image.resize(x, (n, c, size, size), method="linear", antialias=True).astype(x.dtype)

    return scale


@dataclass(frozen=True)
class EpochSchedule:
    """Augmentations by epoch for ``fit``: ``starts[i]`` (0-based) is the first epoch of ``augmentations[i]``
    (``None``: none), each in force until the next start. Build it with ``by_epoch``."""

    starts: tuple[int, ...]
    augmentations: tuple[Augmentation | None, ...]

    def stage(self, epoch: int) -> int:
        """The index of the 0-based ``epoch``'s stage."""
        return max(i for i, start in enumerate(self.starts) if start <= epoch)

    def at(self, epoch: int) -> Augmentation | None:
        """The augmentation of the 0-based ``epoch``."""
        return self.augmentations[self.stage(epoch)]


def by_epoch(stages: Mapping[int, Augmentation | None]) -> EpochSchedule:
    """``{first_epoch: augmentation}`` (0-based epochs, starting at 0; ``None``: no augmentation) as an
    ``EpochSchedule``: ``fit(..., augment=by_epoch({0: small, 5: full}))`` trains epochs 0-4 with ``small`` and the
    rest with ``full``, one compiled step per stage. A resumed run takes up the stage of its epoch."""
    if not isinstance(stages, Mapping) or not stages:
        raise TypeError(f"by_epoch: stages must be a non-empty dict {{first_epoch: augmentation}}, got {stages!r}")
    for start, a in stages.items():
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"by_epoch: each first epoch must be a non-negative integer, got {start!r}")
        if a is not None and not callable(a):
            raise TypeError(
                f"by_epoch: the augmentation from epoch {start} must be a function (key, x) -> x or None, got "
                f"{type(a).__name__}"
            )
    if 0 not in stages:
        raise ValueError(f"by_epoch: the first stage must start at epoch 0, got starts {sorted(stages)}")
    starts = tuple(sorted(stages))
    return EpochSchedule(starts, tuple(stages[s] for s in starts))


def progressive_resizing(augmentation: Augmentation | None, stages) -> EpochSchedule:
    """``stages`` ``((size, epochs), ...)`` as an ``EpochSchedule``: ``epochs`` epochs of ``augmentation`` (``None``:
    none) followed by ``resize(size)``, stage after stage, then ``augmentation`` alone at full size for the rest.

    ``progressive_resizing(crop_flip, ((16, 6), (22, 4)))`` is ``by_epoch({0: compose(crop_flip, resize(16)),
    6: compose(crop_flip, resize(22)), 10: crop_flip})``: the command line's ``--resize-schedule 16:6,22:4``.
    """
    schedule, first = {}, 0
    for size, epochs in stages:
        epochs = _checks.positive_int("epochs", epochs, op="progressive_resizing")
        schedule[first] = resize(size) if augmentation is None else compose(augmentation, resize(size))
        first += epochs
    schedule[first] = augmentation
    return by_epoch(schedule)


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
