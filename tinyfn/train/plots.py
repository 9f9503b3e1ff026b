"""Training pictures: loss and accuracy curves, and a confusion matrix.

Each function builds and returns a ``matplotlib.figure.Figure`` (saved as a PNG
when given a ``path``); none touches pyplot or matplotlib's backend.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from tinyfn._plotting import finish, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_history", "confusion_matrix", "plot_confusion"]


def plot_history(history: dict, path=None, *, title: str = "training", eval_label: str = "eval") -> Figure:
    """Loss (left) and accuracy (right) per epoch, for training and for ``fit``'s ``eval_data`` (labelled
    ``eval_label``).

    ``history`` is what ``fit`` returns. Epochs are whole numbers on the x-axis
    (one epoch gets one tick, not a range around it). Returns the ``Figure``.
    """
    from matplotlib.ticker import MaxNLocator

    epochs = list(history["epoch"])
    fig, (ax_loss, ax_acc) = new_figure(1, 2, figsize=(10, 4))
    for ax, what in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        for split, label, style in (("train", "train", "-o"), ("eval", eval_label, "-s")):
            values = history.get(f"{split}_{what}", [])
            if values and not all(isinstance(v, float) and math.isnan(v) for v in values):
                ax.plot(epochs, values, style, label=label, markersize=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        if 0 < len(epochs) < 3:  # matplotlib would stretch one point over 0.96..1.04
            ax.set_xticks(epochs)
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title(f"{title}: loss")
    ax_acc.set_title(f"{title}: accuracy")
    fig.tight_layout()
    return finish(fig, path)


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """``m[i, j]`` = number of examples of class ``i`` predicted as ``j``."""
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(predictions)), 1)
    return m


def plot_confusion(matrix, classes, path=None, *, title: str = "confusion matrix (test set)") -> Figure:
    """A confusion matrix with counts in the cells and rows normalised for colour; returns the ``Figure``."""
    m = np.asarray(matrix)
    rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    fig, ax = new_figure(figsize=(1.0 + 0.62 * k, 0.6 + 0.55 * k))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(m) / max(m.sum(), 1)
    ax.set_title(f"{title}: accuracy {accuracy:.4f}", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    fig.tight_layout()
    return finish(fig, path)
