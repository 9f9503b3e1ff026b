"""Recipes, run directories and the validation split of ``python -m tinyfn train``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyfn.train import CHECKPOINT_NAME, constant, cosine, step_decay

__all__ = ["RECIPES", "VAL_FRACTION", "check_recipe", "data_name", "run_dir", "schedule", "validation_split"]

# The default recipe per data set (overridable flag by flag).
RECIPES = {
    "embedded": dict(model="lenet5", epochs=15, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine"),
    "full": dict(model="wide_cnn", epochs=12, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine"),
}
VAL_FRACTION = 5_000 / 60_000  # Fashion-MNIST's 60,000 training images keep 5,000 for validation; other data in proportion


def check_recipe(recipe, devices, val_fraction):
    """Flag values that cannot train, named as on the command line, before any data is read."""
    checks = (
        ("epochs", recipe["epochs"] >= 1, "a positive integer"),
        ("batch-size", recipe["batch_size"] >= 1, "a positive integer"),
        ("lr", recipe["lr"] > 0 and np.isfinite(recipe["lr"]), "a positive number"),
        ("momentum", 0 <= recipe["momentum"] < 1, "in [0, 1)"),
        ("weight-decay", recipe["weight_decay"] >= 0 and np.isfinite(recipe["weight_decay"]), "a non-negative number"),
    )
    for flag, ok, expected in checks:
        if not ok:
            raise ValueError(f"--{flag} must be {expected}, got {recipe[flag.replace('-', '_')]}")
    if devices is not None and devices < 1:
        raise ValueError(f"--devices must be a positive integer, got {devices}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")


def data_name(data: str) -> str:
    """A short name for ``--data``: ``embedded``, ``fashion-mnist`` or the IDX directory's own name."""
    return data if data in ("embedded", "fashion-mnist") else Path(data).name or Path(data).resolve().name or "idx"


def run_dir(out, resume: bool, data: str, model_name: str) -> Path:
    """``out``, or ``runs/<model>-<data>`` (a fresh ``-2``, ``-3`` ... when that holds a run and this is no resume)."""
    if out is not None:
        return Path(out)
    base = Path("runs") / f"{model_name}-{data_name(data)}"
    if resume or not (base / CHECKPOINT_NAME).exists():
        return base
    n = 2
    while (base.parent / f"{base.name}-{n}" / CHECKPOINT_NAME).exists():
        n += 1
    return base.parent / f"{base.name}-{n}"


def schedule(name, lr, total_steps):
    """The learning-rate schedule of ``--schedule``."""
    if name == "cosine":
        return cosine(lr, total_steps, warmup_steps=min(total_steps // 20, 200))
    if name == "step":
        return step_decay(lr, max(-(-total_steps // 3), 1), 0.1)
    return constant(lr)


def validation_split(n: int, fraction: float, seed: int):
    """``(train_indices, val_indices)``: ``round(fraction * n)`` examples held out, chosen by ``seed``, each part sorted."""
    n_val = int(round(fraction * n))
    if n_val and n - n_val < 1:
        raise ValueError(f"--val-fraction {fraction} leaves no training images out of {n:,}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
