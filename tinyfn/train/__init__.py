"""Training: optax-protocol optimizers (no optax dependency), a jitted step, the fit loop, augmentation, checkpoints
and plots.

A library: nothing here parses arguments or prints. ``fit`` reports through
callbacks (``StepInfo`` per step, ``EpochSummary`` per epoch; ``ConsoleLog`` is
the default epoch line), and the plots return ``matplotlib`` figures.
"""

from tinyfn.train import augment as augment
from tinyfn.train.checkpoint import (
    CHECKPOINT_NAME as CHECKPOINT_NAME,
)
from tinyfn.train.checkpoint import (
    Checkpoint as Checkpoint,
)
from tinyfn.train.checkpoint import (
    CheckpointError as CheckpointError,
)
from tinyfn.train.checkpoint import (
    checkpoint_path as checkpoint_path,
)
from tinyfn.train.checkpoint import (
    load_checkpoint as load_checkpoint,
)
from tinyfn.train.checkpoint import (
    save_checkpoint as save_checkpoint,
)
from tinyfn.train.loop import (
    EvalResult as EvalResult,
)
from tinyfn.train.loop import (
    FitResult as FitResult,
)
from tinyfn.train.loop import (
    Interrupted as Interrupted,
)
from tinyfn.train.loop import (
    evaluate as evaluate,
)
from tinyfn.train.loop import (
    fit as fit,
)
from tinyfn.train.model_io import LoadedModel as LoadedModel
from tinyfn.train.model_io import load_model as load_model
from tinyfn.train.model_io import model_record as model_record
from tinyfn.train.optim import (
    AdamState as AdamState,
)
from tinyfn.train.optim import (
    EmptyState as EmptyState,
)
from tinyfn.train.optim import (
    GradientTransformation as GradientTransformation,
)
from tinyfn.train.optim import (
    Optimizer as Optimizer,
)
from tinyfn.train.optim import (
    SGDState as SGDState,
)
from tinyfn.train.optim import (
    adam as adam,
)
from tinyfn.train.optim import (
    adamw as adamw,
)
from tinyfn.train.optim import (
    apply_updates as apply_updates,
)
from tinyfn.train.optim import (
    as_gradient_transformation as as_gradient_transformation,
)
from tinyfn.train.optim import (
    chain as chain,
)
from tinyfn.train.optim import (
    clip_by_global_norm as clip_by_global_norm,
)
from tinyfn.train.optim import (
    constant as constant,
)
from tinyfn.train.optim import (
    cosine as cosine,
)
from tinyfn.train.optim import (
    sgd as sgd,
)
from tinyfn.train.optim import (
    step_decay as step_decay,
)
from tinyfn.train.optim import (
    weights_only as weights_only,
)
from tinyfn.train.parallel import data_mesh as data_mesh
from tinyfn.train.parallel import is_writer as is_writer
from tinyfn.train.plots import (
    confusion_matrix as confusion_matrix,
)
from tinyfn.train.plots import (
    plot_confusion as plot_confusion,
)
from tinyfn.train.plots import (
    plot_history as plot_history,
)
from tinyfn.train.progress import (
    ConsoleLog as ConsoleLog,
)
from tinyfn.train.progress import (
    EpochSummary as EpochSummary,
)
from tinyfn.train.progress import (
    StepInfo as StepInfo,
)
from tinyfn.train.progress import (
    format_epoch as format_epoch,
)
from tinyfn.train.step import (
    accuracy as accuracy,
)
from tinyfn.train.step import (
    make_eval_step as make_eval_step,
)
from tinyfn.train.step import (
    make_train_step as make_train_step,
)
