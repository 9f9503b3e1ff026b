"""Keeping the best epoch and stopping early, both read from a run's history (so a resumed run continues them).

The monitored metric is ``"val_loss"`` (``history["eval_loss"]``, lower is better) or ``"val_accuracy"``
(``history["eval_accuracy"]``, higher is better). The best epoch is the first epoch that reached the best value
(later ties do not replace it; NaN is never best). ``stale_epochs`` counts the epochs after it: early stopping with
``patience=k`` stops once ``k`` epochs in a row brought no improvement. Nothing here is kept outside the history,
so the best-so-far and the patience counter survive a resume by construction.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

__all__ = ["MONITORS", "BEST_NAME", "Watch", "check_monitor", "best_epochs", "stale_epochs"]

MONITORS = {"val_loss": ("eval_loss", "min"), "val_accuracy": ("eval_accuracy", "max")}
BEST_NAME = "best.safetensors"  # the best epoch's checkpoint, beside ``CHECKPOINT_NAME`` in the checkpoint directory


def check_monitor(keep_best, patience, *, has_eval: bool, checkpoint_dir) -> str | None:
    """The monitored metric's name (``keep_best``'s; ``"val_loss"`` for ``patience`` alone), ``None`` for neither;
    a clear error for a metric fit does not know, a bad patience, or no ``eval_data`` to monitor."""
    if keep_best is not None and keep_best not in MONITORS:
        raise ValueError(f"fit: keep_best must be one of {', '.join(map(repr, MONITORS))} or None, got {keep_best!r}")
    if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
        raise ValueError(f"fit: patience must be a positive int (epochs without improvement) or None, got {patience!r}")
    metric = keep_best if keep_best is not None else ("val_loss" if patience is not None else None)
    if metric is not None and not has_eval:
        what = f"keep_best={keep_best!r}" if keep_best is not None else f"patience={patience}"
        raise ValueError(f"fit: {what} monitors {metric}, which needs eval_data (the validation set)")
    if keep_best is not None and checkpoint_dir is None:
        raise ValueError(
            f"fit: keep_best={keep_best!r} writes the best epoch's checkpoint ({BEST_NAME}) into checkpoint_dir; "
            "give checkpoint_dir"
        )
    return metric


def best_epochs(history: dict, metric: str) -> list:
    """For each epoch of ``history``, the 1-based epoch that was best up to it (``None`` while no value is finite)."""
    key, mode = MONITORS[metric]
    best, at, out = None, None, []
    for epoch, value in enumerate(history[key], start=1):
        value = float(value)
        if not math.isnan(value) and (best is None or (value < best if mode == "min" else value > best)):
            best, at = value, epoch
        out.append(at)
    return out


def stale_epochs(history: dict, metric: str) -> int:
    """Epochs since the best one (all of them while none is best): what ``patience`` is compared with."""
    bests = best_epochs(history, metric)
    return len(bests) - (bests[-1] or 0) if bests else 0


class Watch(NamedTuple):
    """What ``fit`` watches after each epoch: the monitored metric, the best checkpoint, patience, the CSV log."""

    metric: str | None
    best_path: Path | None
    patience: int | None
    csv_path: Path | None

    def mark(self, run) -> bool:
        """Record the best epoch so far in the history; ``True`` when the epoch just closed is it."""
        if self.metric is None:
            return False
        run.history["best_epoch"] = best_epochs(run.history, self.metric)
        return bool(run.history["best_epoch"]) and run.history["best_epoch"][-1] == len(run.history["epoch"])

    def exhausted(self, run) -> bool:
        """``patience`` epochs in a row without improvement: the run stops early."""
        return self.patience is not None and stale_epochs(run.history, self.metric) >= self.patience
