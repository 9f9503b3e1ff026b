"""Ready-made models, each a ``serial`` stack of tinyfn layers."""

from __future__ import annotations

from tinyfn import _checks
from tinyfn.layers import Conv2D, Flatten, Linear, MaxPool2D, ReLU, serial

__all__ = ["lenet5", "MODELS", "get_model"]


def lenet5(num_classes: int = 10):
    """LeNet-5 for ``(N, 1, 28, 28)`` images (61,706 params for 10 classes).

    conv(6, 5×5, pad 2) - relu - pool 2 - conv(16, 5×5) - relu - pool 2 - flatten -
    linear(120) - relu - linear(84) - relu - linear(num_classes).
    """
    num_classes = _checks.positive_int("num_classes", num_classes)
    return serial(
        Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2),
        Conv2D(16, 5), ReLU(), MaxPool2D(2),
        Flatten(),
        Linear(120), ReLU(),
        Linear(84), ReLU(),
        Linear(num_classes),
    )  # fmt: skip


MODELS = {"lenet5": lenet5}


def get_model(name: str, **kwargs):
    """A model by name from ``MODELS``, built with ``kwargs``."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](**kwargs)
