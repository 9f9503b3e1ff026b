"""Where a ``fit`` run stands, and its checkpoint: the state the step carries, the position reached, saving it
at a position and resuming from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np

from tinyfn.train import parallel
from tinyfn.train.checkpoint import load_checkpoint, restore_like, save_checkpoint

__all__ = ["HISTORY_KEYS", "Run", "Saver", "restore"]

HISTORY_KEYS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "eval_loss",
    "eval_accuracy",
    "images_per_second",
    "epoch_time",
    "wall_time",
    "skipped_steps",
)


@dataclass
class Run:
    """Where training stands: the state the step carries, and the position it has reached."""

    params: object
    opt_state: object
    model_state: object
    epoch: int = 0  # 0-based epoch in progress
    batch: int = 0  # steps of that epoch already taken
    loss_sum: float = 0.0  # over the finite steps of the epoch so far
    accuracy_sum: float = 0.0
    count: int = 0
    skipped: int = 0
    history: dict = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    wall_offset: float = 0.0  # seconds trained before a resume

    def position(self, batch: int) -> dict:
        return {
            "epoch": self.epoch,
            "batch": batch,
            "loss_sum": self.loss_sum,
            "accuracy_sum": self.accuracy_sum,
            "count": self.count,
        }

    def next_epoch(self):
        self.epoch, self.batch, self.loss_sum, self.accuracy_sum, self.count, self.skipped = (
            self.epoch + 1,
            0,
            0.0,
            0,
            0,
            0,
        )


def _one_copy(a):
    """A replicated array's copy on this process's first device (multi-host safe), anything else as it is."""
    return a.addressable_data(0) if isinstance(a, jax.Array) and len(a.sharding.device_set) > 1 else a


class Saver:
    """Writes the run's checkpoint at a position (process 0 only); ``save`` returns the path, or ``None`` if nothing
    was written. The position records the batch size and the number of examples its batch index counts in."""

    def __init__(self, path, *, key, metadata, epochs, source):
        """``source``: the run's batches (``tinyfn.train.batches``), with ``steps``, ``batch_size``, ``examples``."""
        self.path, self.key, self.steps = path, key, source.steps
        self.metadata = dict(metadata or {}, epochs=epochs, batch_size=source.batch_size)
        self.frame = {"batch_size": source.batch_size, "examples": source.examples}

    def save(self, run: Run, batch: int, path=None):
        """The run's checkpoint at ``batch`` of its epoch, to ``self.path`` (or ``path``: the best epoch's)."""
        if self.path is None or not parallel.is_writer():
            return None
        meta = dict(self.metadata, position=dict(run.position(batch), **self.frame), history=run.history)
        local = lambda tree: jax.tree_util.tree_map(_one_copy, tree)  # noqa: E731
        step = run.epoch * self.steps + batch if self.steps else None  # an iterable without len: no global step
        return save_checkpoint(
            path or self.path,
            local(run.params),
            opt_state=local(run.opt_state),
            model_state=local(run.model_state),
            step=step,
            key=self.key,
            metadata=meta,
        )


def _check_frame(ckpt_path, pos, metadata, *, batch_size, examples):
    """A mid-epoch position counts batches of the run's size over its data: another batch size or data length
    would revisit or skip examples. Refused, naming the argument, its value and the checkpoint's."""
    if not pos.get("batch"):
        return  # at an epoch boundary nothing of the old epoch's order is reused
    where = f"{ckpt_path} stopped mid-epoch (epoch {pos['epoch'] + 1}, after step {pos['batch']})"
    saved = pos.get("batch_size", metadata.get("batch_size"))
    if saved is not None and saved != batch_size:
        raise ValueError(
            f"fit: batch_size={batch_size} contradicts the checkpoint's {saved}: {where}; "
            f"resume with batch_size={saved}"
        )
    saved = pos.get("examples")
    if saved is not None and saved != examples:
        raise ValueError(
            f"fit: train_data holds {examples} examples, which contradicts the checkpoint's {saved}: {where}; "
            "resume on the run's training data"
        )


def restore(ckpt_path, run: Run, key, *, batch_size: int, examples: int) -> Run:
    """The run saved at ``ckpt_path``: params, optimizer and model state, position, history; refused if another key
    wrote it, or if it stopped mid-epoch with another batch size or data length."""
    if ckpt_path is None or not ckpt_path.is_file():
        raise FileNotFoundError(f"fit: resume=True but there is no checkpoint to resume from at {ckpt_path}")
    ckpt = load_checkpoint(ckpt_path, like=run.params)
    pos = ckpt.metadata.get("position") or {}
    if ckpt.opt_state is None or ckpt.key is None or not pos:
        raise ValueError(
            f"fit: {ckpt_path} holds no training position (optimizer state, key, epoch); it cannot be resumed"
        )
    if not np.array_equal(jax.random.key_data(ckpt.key), jax.random.key_data(key)):
        raise ValueError(f"fit: {ckpt_path} was written by a run with another key (seed); resume with the same seed")
    _check_frame(ckpt_path, pos, ckpt.metadata, batch_size=batch_size, examples=examples)
    history = {k: list(ckpt.metadata.get("history", {}).get(k, [])) for k in HISTORY_KEYS}
    if ckpt.model_state is None and jax.tree_util.tree_leaves(run.model_state):
        raise ValueError(
            f"fit: {ckpt_path} holds no model state (running statistics) but the model carries state; "
            "it cannot be resumed"
        )
    model_state = run.model_state
    if ckpt.model_state is not None:
        model_state = restore_like(ckpt.model_state, run.model_state, what="model_state")
    wall = history["wall_time"][-1] if history["wall_time"] else 0.0
    return Run(
        ckpt.params,
        restore_like(ckpt.opt_state, run.opt_state),
        model_state,
        pos["epoch"],
        pos["batch"],
        pos["loss_sum"],
        pos["accuracy_sum"],
        pos["count"],
        0,
        history,
        wall,
    )
