"""Training: optax-protocol optimizers (no optax dependency), a jitted step, the fit loop, augmentation, checkpoints
and plots.

A library: nothing here parses arguments or prints. ``fit`` reports through
callbacks (``StepInfo`` per step, ``EpochSummary`` per epoch; ``ConsoleLog`` is
the default epoch line), and the plots return ``matplotlib`` figures.
"""

from tinyfn.train import augment as augment
from tinyfn.train.checkpoint import (
    CHECKPOINT_NAME as CHECKPOINT_NAME,
    Checkpoint as Checkpoint,
    CheckpointError as CheckpointError,
    checkpoint_path as checkpoint_path,
    load_checkpoint as load_checkpoint,
    restore_like as restore_like,
    save_checkpoint as save_checkpoint,
)
from tinyfn.train.loop import (
    BEST_NAME as BEST_NAME,
    EvalResult as EvalResult,
    FitResult as FitResult,
    Interrupted as Interrupted,
    evaluate as evaluate,
    fit as fit,
)
from tinyfn.train.masks import freeze as freeze, scale_where as scale_where
from tinyfn.train.metrics_csv import METRICS_CSV as METRICS_CSV
from tinyfn.train.model_io import (
    LoadedModel as LoadedModel,
    load_model as load_model,
    load_params as load_params,
    model_record as model_record,
)
from tinyfn.train.optim import (
    AdamState as AdamState,
    EmptyState as EmptyState,
    GradientTransformation as GradientTransformation,
    SGDState as SGDState,
    adam as adam,
    adamw as adamw,
    apply_updates as apply_updates,
    as_gradient_transformation as as_gradient_transformation,
    chain as chain,
    clip_by_global_norm as clip_by_global_norm,
    constant as constant,
    cosine as cosine,
    sgd as sgd,
    step_decay as step_decay,
    weights_only as weights_only,
)
from tinyfn.train.parallel import data_mesh as data_mesh, is_writer as is_writer
from tinyfn.train.plots import (
    confusion_matrix as confusion_matrix,
    plot_confusion as plot_confusion,
    plot_history as plot_history,
)
from tinyfn.train.progress import (
    ConsoleLog as ConsoleLog,
    EpochSummary as EpochSummary,
    StepInfo as StepInfo,
    format_epoch as format_epoch,
)
from tinyfn.train.step import (
    accuracy as accuracy,
    make_eval_step as make_eval_step,
    make_train_step as make_train_step,
)
