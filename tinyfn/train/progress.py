"""What ``fit`` reports while it runs: per-step and per-epoch records, a progress bar and a console log.

``fit`` calls its ``callbacks`` with a ``StepInfo`` after every step and its
``epoch_callbacks`` with an ``EpochSummary`` after every epoch; it never prints.
``ConsoleLog`` is the per-epoch line ``fit(..., quiet=False)`` shows by default
(and that the command line uses); ``progress_bar`` is the tqdm bar of an epoch.

The bar is tqdm's console bar except in a Jupyter kernel that has ipywidgets, where it is the notebook widget.
``tqdm.auto`` would make that choice on import and warn on stderr (``TqdmWarning: IProgress not found``) in a
kernel without ipywidgets, even for a quiet run; here the choice is made only for a bar that is shown.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import NamedTuple

from tqdm import tqdm  # the console bar: importing it never warns

__all__ = ["StepInfo", "EpochSummary", "format_epoch", "ConsoleLog", "progress_bar"]


class StepInfo(NamedTuple):
    """What a step callback sees after each step."""

    epoch: int  # 0-based
    batch: int  # 0-based, within the epoch
    step: int  # global, counting from 0
    loss: float
    accuracy: float
    finite: bool = True  # False: the loss or gradients were NaN/Inf (the step was skipped or the run stops)


class EpochSummary(NamedTuple):
    """What an epoch callback sees after each epoch (the values ``fit`` appends to ``history``)."""

    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_accuracy: float
    eval_loss: float  # NaN without eval_data
    eval_accuracy: float
    images_per_second: float
    epoch_time: float
    skipped_steps: int


def format_epoch(s: EpochSummary, eval_label: str = "eval") -> str:
    """``epoch 3/15: train loss 0.4312 acc 0.8421 | eval loss ... | 2,345 img/s | 3.4 s``."""
    evals = f" | {eval_label} loss {s.eval_loss:.4f} acc {s.eval_accuracy:.4f}" if s.eval_loss == s.eval_loss else ""
    skipped = f" | {s.skipped_steps} steps skipped" if s.skipped_steps else ""
    return (
        f"epoch {s.epoch}/{s.epochs}: train loss {s.train_loss:.4f} acc {s.train_accuracy:.4f}{evals}"
        f" | {s.images_per_second:,.0f} img/s | {s.epoch_time:.1f} s{skipped}"
    )


class ConsoleLog:
    """An epoch callback writing ``format_epoch`` lines (through tqdm, so a live bar is not torn) to ``file``."""

    def __init__(self, file=None, eval_label: str = "eval"):
        self.file, self.eval_label = file, eval_label

    def __call__(self, summary: EpochSummary) -> None:
        tqdm.write(format_epoch(summary, self.eval_label), file=self.file or sys.stdout)
        (self.file or sys.stdout).flush()


def _in_widget_kernel() -> bool:
    """True in a Jupyter kernel (IPython's ``IPKernelApp``) where ipywidgets is installed."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    in_kernel = shell is not None and "IPKernelApp" in getattr(shell, "config", {})
    return in_kernel and importlib.util.find_spec("ipywidgets") is not None


def _bar_class(quiet: bool = False) -> type:
    """The tqdm class for a bar: the notebook widget where ``_in_widget_kernel()``, else the console bar."""
    if quiet or not _in_widget_kernel():
        return tqdm
    from tqdm.notebook import tqdm as notebook_tqdm  # imported only here: it needs ipywidgets

    return notebook_tqdm


def progress_bar(*, total: int, initial: int, desc: str, quiet: bool):
    """The bar of one epoch (on stderr, cleared when the epoch ends); ``quiet`` turns it off."""
    return _bar_class(quiet)(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        leave=False,
        disable=quiet,
        mininterval=0.5,
        dynamic_ncols=True,
    )
