"""Training: an optax-free SGD, a jitted step, the fit loop, checkpoints and plots."""

from tinyfn.train.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from tinyfn.train.loop import CHECKPOINT_NAME, StepInfo, evaluate, fit
from tinyfn._malloc import keep_freed_memory
from tinyfn.train.parallel import data_mesh, is_writer
from tinyfn.train.model_io import load_model
from tinyfn.train.optim import Optimizer, constant, cosine, sgd, step_decay
from tinyfn.train.optim import (
    AdamState, EmptyState, GradientTransformation, SGDState, adam, adamw, apply_updates, as_gradient_transformation,
    chain, clip_by_global_norm,
)  # fmt: skip
from tinyfn.train.plots import confusion_matrix, plot_confusion, plot_history
from tinyfn.train.step import accuracy, make_eval_step, make_train_step
from tinyfn.train import augment

__all__ = [
    "sgd",
    "adam",
    "adamw",
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
    "evaluate",
    "StepInfo",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "Checkpoint",
    "CheckpointError",
    "CHECKPOINT_NAME",
    "keep_freed_memory",
    "data_mesh",
    "is_writer",
    "plot_history",
    "plot_confusion",
    "confusion_matrix",
]
