"""The flags of ``python -m tinyfn train``: the data and model, the recipe (each defaults to the recipe's), the run."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinyfn.cli import seed_int
from tinyfn.cli.runs import DECAY_NAMES, KEEP_BEST_NAMES, OPTIMIZERS, PRECISIONS, TTA_NAMES, VAL_FRACTION

_DEFAULT = "default: the recipe's"


def data_and_model_flags(add):
    add(
        "--data",
        default=None,
        help="'embedded' (default: 8,000/2,000 images shipped with tinyfn), 'fashion-mnist' "
        "(the Debian location) or an IDX directory",
    )
    add(
        "--model",
        default=None,
        help="a model of tinyfn.models.MODELS: lenet5, wide_cnn, resnet, vit (default: lenet5 on "
        "embedded data, wide_cnn on full data; resnet and vit bring their own recipes: AdamW, cosine with warm-up, "
        "augmentation)",
    )
    add(
        "--optimizer",
        choices=OPTIMIZERS,
        default=None,
        help=f"sgd (Nesterov momentum), adam or adamw (decoupled weight decay); {_DEFAULT}",
    )
    add(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"random crops and horizontal flips, on the device inside the step ({_DEFAULT}; on for resnet)",
    )
    add(
        "--crop-padding",
        type=int,
        default=None,
        help=f"with --augment: pad by this many pixels, then crop back at a random offset ({_DEFAULT}; 0: flips only)",
    )
    add(
        "--resize-schedule",
        default=None,
        metavar="SIZE:EPOCHS,...",
        help="progressive resizing: train the first EPOCHS epochs on images scaled to SIZE x SIZE, then the next "
        f"stage's, the rest at full size (e.g. 16:5,22:4; {_DEFAULT}; 'none': full size throughout)",
    )
    add(
        "--precision",
        choices=tuple(PRECISIONS),
        default=None,
        help="fp32 (default) or bf16: convolutions and linear "
        "layers compute in bfloat16, params, the loss and batch norm's statistics stay float32",
    )
    add(
        "--formulation",
        choices=("auto", "im2col", "xla", "direct"),
        default=None,
        help="how the convolutions and "
        "pooling are evaluated (default auto: the backend's; see README 'Speed'); may change on --resume",
    )


def recipe_flags(add):
    add(
        "--epochs",
        type=int,
        default=None,
        help=f"{_DEFAULT}; on --resume it may change only with --schedule constant",
    )
    add("--batch-size", type=int, default=None)
    add("--lr", type=float, default=None, help="peak learning rate")
    add("--momentum", type=float, default=None)
    add("--weight-decay", type=float, default=None)
    add(
        "--decay",
        choices=DECAY_NAMES,
        default=None,
        help="which params the weight decay applies to: all, or weights "
        f"(filters and weight matrices; not the norms' scale and shift nor biases); {_DEFAULT}",
    )
    add(
        "--label-smoothing",
        type=float,
        default=None,
        help=f"train on targets (1 - e) onehot + e/K ({_DEFAULT}); "
        "validation and test losses stay the plain cross-entropy",
    )
    add(
        "--tta",
        choices=TTA_NAMES,
        default=None,
        help="test-time augmentation of the final test evaluation: flip "
        f"averages the class probabilities of each image and its mirror image ({_DEFAULT}; flip for resnet); the "
        "single-view test accuracy is reported beside it",
    )
    add(
        "--schedule",
        choices=("cosine", "constant", "step"),
        default=None,
        help="learning-rate schedule (step: x0.1 after each third of the run)",
    )
    add(
        "--val-fraction",
        type=float,
        default=None,
        help="share of the training images held out for the per-epoch "
        f"validation curve ({_DEFAULT}, {VAL_FRACTION:.4f}: 5,000 of Fashion-MNIST's 60,000, 667 of the embedded "
        "8,000; 0 for resnet, which trains on all of them; 0 for none); the test set is evaluated once, at the end",
    )


def selection_flags(add):
    """Which epoch's params the run ends with: the best validation epoch's, and early stopping."""
    add(
        "--keep-best",
        choices=KEEP_BEST_NAMES,
        default=None,
        help="keep the checkpoint of the epoch with the best validation loss (or accuracy) as best.safetensors and "
        f"evaluate the test set with it ({_DEFAULT}: val_loss with a validation split; none: the last epoch's)",
    )
    add(
        "--patience",
        type=int,
        default=None,
        help="stop after this many epochs without a better validation loss (or --keep-best metric); 0: never "
        f"({_DEFAULT}: 0)",
    )


def run_flags(add):
    add(
        "--seed", type=seed_int, default=None, help="seed of the split, the initialisation and the shuffles (default 0)"
    )
    add(
        "--out",
        type=Path,
        default=None,
        help="run directory (default runs/<model>-<data>, a fresh one if that holds a run)",
    )
    add(
        "--resume",
        action="store_true",
        help="continue the run in --out (or the default run directory) from its checkpoint, with the run's own recipe",
    )
    add("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add(
        "--skip-nonfinite",
        action="store_true",
        help="skip steps whose loss or gradients are NaN/Inf instead of stopping",
    )
    add(
        "--devices",
        type=int,
        default=None,
        help="data-parallel over this many devices (jax.sharding; the batch size must divide by it)",
    )
