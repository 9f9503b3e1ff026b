"""Training: optax-protocol optimizers (no optax dependency), a jitted step, the fit loop, augmentation, checkpoints and plots.

A library: nothing here parses arguments or prints. ``fit`` reports through
callbacks (``StepInfo`` per step, ``EpochSummary`` per epoch; ``ConsoleLog`` is
the default epoch line), and the plots return ``matplotlib`` figures.
"""

from tinyfn.train.checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from tinyfn.train.model_io import LoadedModel, load_model, model_record
from tinyfn.train.loop import EvalResult, FitResult, Interrupted, evaluate, fit
from tinyfn.train.parallel import data_mesh, is_writer
from tinyfn.train.optim import Optimizer, constant, cosine, sgd, step_decay
from tinyfn.train.optim import (
    AdamState, EmptyState, GradientTransformation, SGDState, adam, adamw, apply_updates, as_gradient_transformation,
    chain, clip_by_global_norm, weights_only,
)  # fmt: skip
from tinyfn.train.plots import confusion_matrix, plot_confusion, plot_history
from tinyfn.train.progress import ConsoleLog, EpochSummary, StepInfo, format_epoch
from tinyfn.train.step import accuracy, make_eval_step, make_train_step
from tinyfn.train import augment

__all__ = [
    "sgd",
    "adam",
    "adamw",
    "weights_only",
    "clip_by_global_norm",
    "chain",
    "apply_updates",
    "as_gradient_transformation",
    "GradientTransformation",
    "SGDState",
    "AdamState",
    "EmptyState",
    "Optimizer",
    "constant",
    "step_decay",
    "cosine",
    "make_train_step",
    "augment",
    "make_eval_step",
    "accuracy",
    "fit",
    "FitResult",
    "evaluate",
    "EvalResult",
    "StepInfo",
    "EpochSummary",
    "ConsoleLog",
    "format_epoch",
    "Interrupted",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "LoadedModel",
    "model_record",
    "checkpoint_path",
    "Checkpoint",
    "CheckpointError",
    "CHECKPOINT_NAME",
    "data_mesh",
    "is_writer",
    "plot_history",
    "plot_confusion",
    "confusion_matrix",
]

