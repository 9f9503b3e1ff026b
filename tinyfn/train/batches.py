"""Where ``fit``'s batches come from: arrays it shuffles itself, or an iterable of ``(x, y)`` batches.

Arrays ``(x, y)``: each epoch visits ``len(y) // batch_size`` batches in the order
``permutation(fold_in(key, epoch))`` (the remainder is dropped). An iterable of batches: each epoch is one pass of
``iter(train_data)``, in the order it yields, with the batch sizes it yields; fit shuffles nothing (shuffle inside
the iterable, e.g. by epoch). Either way the key of step ``b`` of epoch ``e`` is ``fold_in(fold_in(key, e), b)``.

A re-iterable (a list, or an object whose ``__iter__`` starts a new pass) trains any number of epochs and resumes:
a checkpoint saved mid-epoch resumes by skipping the batches that epoch already took, which is the same run when the
iterable yields the same batches each pass. A one-shot iterator (``iter(it) is it``, e.g. a generator) can be
consumed once: it trains one epoch and cannot resume; more is refused, naming the argument.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ArrayBatches", "IterableBatches", "is_array_pair"]


def is_array_pair(data) -> bool:
    """``(images, labels)``, rather than an iterable of batches: a pair whose first item is not itself a tuple
    (two batches in a list are ``[(x0, y0), (x1, y1)]``)."""
    return isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], tuple)


def _step_keys(key, epoch, first, steps):
    ekey = jax.random.fold_in(key, epoch)
    return np.asarray(jax.random.key_data(jax.vmap(lambda b: jax.random.fold_in(ekey, b))(jnp.arange(first, steps))))


class ArrayBatches:
    """Shuffled mini-batches of the arrays ``x``, ``y``: ``steps`` per epoch."""

    def __init__(self, x, y, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.steps, self.examples, self.x_shape = len(y) // batch_size, len(y), x.shape[1:]

    def epoch(self, key, epoch: int, first: int):
        """The epoch's ``(x, y, key data)`` batches from batch ``first`` on."""
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), len(self.y)))
        keys = _step_keys(key, epoch, first, self.steps)
        for b in range(first, self.steps):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.x[idx], self.y[idx], keys[b - first]


class IterableBatches:
    """The ``(x, y)`` batches of an iterable, one pass an epoch; ``steps`` is its ``len`` (``None`` without one)."""

    batch_size = examples = None  # set by the batches themselves: nothing to check on resume

    def __init__(self, data, *, epochs: int, resume: bool):
        try:
            first_pass = iter(data)
        except TypeError:
            raise TypeError(
                f"fit: train_data must be a pair of arrays (images, labels) or an iterable of (x, y) batches, "
                f"got {type(data).__name__}"
            ) from None
        self.one_shot = first_pass is data
        if self.one_shot and (epochs > 1 or resume):
            what = f"epochs={epochs}" if epochs > 1 else "resume=True"
            raise ValueError(
                f"fit: train_data is a one-shot iterator ({type(data).__name__}), which yields its batches once: "
                f"{what} needs an iterable that starts a new pass at each iter() (a list, or a class with __iter__); "
                "resuming one replays its batches from the start of the epoch"
            )
        head = next(first_pass, None)
        if head is None:
            raise ValueError("fit: train_data yields no batches")
        self.x_shape = np.shape(self._checked(head)[0])[1:]
        self.data, self.pending = data, (itertools.chain([head], first_pass) if self.one_shot else None)
        self.steps = len(data) if hasattr(data, "__len__") else None

    @staticmethod
    def _checked(batch):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"fit: each batch of train_data must be a pair (x, y), got {type(batch).__name__}")
        x, y = np.asarray(batch[0]), np.asarray(batch[1])
        if len(x) != len(y):
            raise ValueError(f"fit: a batch of train_data holds {len(x)} inputs but {len(y)} labels")
        return x, y

    def epoch(self, key, epoch: int, first: int):
        """The epoch's ``(x, y, key data)`` batches from batch ``first`` on (the ones before it are skipped)."""
        batches, self.pending = (self.pending if self.pending is not None else iter(self.data)), None
        ekey = jax.random.fold_in(key, epoch)
        for b, batch in enumerate(itertools.islice(batches, first, None), start=first):
            x, y = self._checked(batch)
            yield x, y, np.asarray(jax.random.key_data(jax.random.fold_in(ekey, b)))
