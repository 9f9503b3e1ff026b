"""Recipes, run directories and the validation split of ``python -m tinyfn train``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyfn.train import CHECKPOINT_NAME, constant, cosine, step_decay
from tinyfn.train.augment import TTA_VIEWS

__all__ = [
    "RECIPES",
    "OPTIMIZERS",
    "TTA_NAMES",
    "DECAY_NAMES",
    "KEEP_BEST_NAMES",
    "PRECISIONS",
    "RUN_KEYS",
    "VAL_FRACTION",
    "recipe_for",
    "new_recipe",
    "run_recipe",
    "resumed_recipe",
    "make_optimizer",
    "make_augment",
    "resize_stages",
    "check_recipe",
    "data_name",
    "run_dir",
    "schedule",
    "validation_split",
]

# Fashion-MNIST's 60,000 training images keep 5,000 for validation; other data in proportion
VAL_FRACTION = 5_000 / 60_000

# The default recipe per data set (overridable flag by flag); "resnet" is --model resnet's own, on any data.
_SGD = dict(
    optimizer="sgd",
    lr=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    schedule="cosine",
    augment=False,
    crop_padding=2,
    resize_schedule="none",
    label_smoothing=0.0,
    tta="none",
    decay="all",
    val_fraction=VAL_FRACTION,
    keep_best="val_loss",  # the test set is evaluated with the best validation epoch's params (best.safetensors)
    patience=0,  # no early stopping
)
# AdamW (decay on filters and matrices only), cosine with a warm-up, random crops (padding 1) and flips, label
# smoothing 0.1, all the training images (no validation split), flip views at test time.
_ADAMW = dict(
    batch_size=128,
    optimizer="adamw",
    momentum=0.9,
    weight_decay=5e-2,
    schedule="cosine",
    augment=True,
    crop_padding=1,
    resize_schedule="none",
    label_smoothing=0.1,
    tta="flip",
    decay="weights",
    val_fraction=0.0,
    keep_best="none",  # no validation split: the last epoch is the run's result
    patience=0,
)
RECIPES = {
    "embedded": dict(_SGD, model="lenet5", epochs=15, batch_size=64),
    "full": dict(_SGD, model="wide_cnn", epochs=12, batch_size=128),
    # models.vit() (7x7 patches, 4 pre-norm blocks of 64 features and 4 heads): 0.907 on the full test set in 10 min
    # 22 s all in on two cores (benchmarks/README.md, "ViT"); the embedded job takes under 2 minutes
    "vit": dict(_ADAMW, model="vit", epochs=18, lr=2e-3),
    # models.resnet() (24-48-96 channels in 1, 1 and 3 blocks after a 4x4 stride-2 stem): the recipe of
    # benchmarks/resnet_recipe.py (RESNET_RECIPE); its measured runs are in benchmarks/README.md ("ResNet").
    "resnet": dict(_ADAMW, model="resnet", epochs=15, lr=4e-3),
}
OPTIMIZERS = ("sgd", "adam", "adamw")
TTA_NAMES = tuple(TTA_VIEWS)  # --tta: the named test-time views ("none", "flip")
DECAY_NAMES = ("all", "weights")  # weights: tinyfn.train.weights_only
KEEP_BEST_NAMES = ("val_loss", "val_accuracy", "none")  # --keep-best: fit(keep_best=...), with a validation split
PRECISIONS = {"fp32": None, "bf16": "bfloat16"}
# With the recipe, what else shapes a run: its data (and so its split and normalisation), its seed (the split, the
# initialisation, the shuffles) and its precision. A run records all of it as its recipe; --resume takes it from there.
RUN_KEYS = {"data": "embedded", "seed": 0, "precision": "fp32"}


def recipe_for(data: str, model: str | None) -> dict:
    """The recipe a run starts from: the model's own (``resnet``), else the data set's, with ``model`` if given."""
    if model is not None and model in RECIPES and model not in ("embedded", "full"):
        return dict(RECIPES[model])
    recipe = dict(RECIPES["embedded" if data == "embedded" else "full"])
    if model is not None:
        recipe["model"] = model
    return recipe


def new_recipe(args) -> dict:
    """The full recipe of a new run: the model's or the data set's defaults and ``RUN_KEYS``, then each flag given."""
    data = args.data if args.data is not None else RUN_KEYS["data"]
    recipe = dict(recipe_for(data, args.model), **RUN_KEYS)
    for name in recipe:
        value = getattr(args, name, None)
        if value is not None:
            recipe[name] = value
    return recipe


def run_recipe(meta: dict, where) -> dict:
    """The full recipe a run's checkpoint metadata records.

    Older runs kept data, seed and precision beside the recipe, and a recipe
    entry added since (``decay``, ``tta``, ...) takes its default of that run's data and model;
    ``keep_best`` excepted: a run written before it kept no best epoch (``"none"``).
    """
    recipe = meta.get("recipe")
    if not isinstance(recipe, dict) or "model" not in recipe:
        raise ValueError(f"--resume: {where} records no recipe (it was not written by `python -m tinyfn train`)")
    run_keys = {k: meta.get(k, default) for k, default in RUN_KEYS.items()}
    defaults = dict(recipe_for(str(recipe.get("data", run_keys["data"])), recipe["model"]), keep_best="none")
    return {**defaults, **run_keys, **recipe}


def _as_flag(name, value) -> str:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {value}"


def resumed_recipe(args, recorded: dict, where) -> dict:
    """A resumed run's recipe: the ``recorded`` one, each flag given on the command line checked against it.

    A flag that contradicts the run is refused by name. Only ``--epochs`` may
    change, and only in a run with ``--schedule constant``: a cosine or step
    schedule spans the run's own number of steps, and rebuilding it for another
    total would put the resumed step count at another learning rate (past its
    end: a rate of 0, where every step changes nothing).
    """
    recipe = dict(recorded)
    for name, was in recorded.items():
        value = getattr(args, name, None)
        if value is None or value == was:
            continue
        if name == "epochs" and recipe["schedule"] == "constant":
            recipe["epochs"] = value
            continue
        why = "; --resume continues the run with its own recipe"
        if name == "epochs":
            why = f"; its {recipe['schedule']} learning-rate schedule spans its {was} epochs (--epochs may change only "
            why += "with --schedule constant)"
        shown = _as_flag(name, was) if isinstance(was, bool) else was
        raise ValueError(f"{_as_flag(name, value)} contradicts the run's {shown} ({where}){why}")
    return recipe


def make_optimizer(recipe, total_steps):
    """The ``--optimizer`` of ``recipe`` with its schedule: SGD (Nesterov momentum, L2 weight decay), Adam (L2) or
    AdamW (decoupled).

    ``--decay weights`` applies the weight decay to filters and weight matrices
    only (``tinyfn.train.weights_only``), not to batch norm's scale and shift nor to biases.
    """
    from tinyfn.train import adam, adamw, sgd, weights_only

    lr = schedule(recipe["schedule"], recipe["lr"], total_steps)
    name = recipe["optimizer"]
    decay = dict(
        weight_decay=recipe["weight_decay"], mask=weights_only if recipe.get("decay", "all") == "weights" else None
    )
    if name == "sgd":
        return sgd(lr, momentum=recipe["momentum"], nesterov=recipe["momentum"] > 0, **decay)
    if name == "adam":
        return adam(lr, **decay)
    if name == "adamw":
        return adamw(lr, **decay)
    raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def train_loss(recipe):
    """The training loss: ``softmax_cross_entropy`` with the recipe's ``label_smoothing``."""
    from functools import partial

    from tinyfn.losses import softmax_cross_entropy

    eps = recipe.get("label_smoothing", 0.0)
    return partial(softmax_cross_entropy, label_smoothing=eps) if eps else softmax_cross_entropy


def resize_stages(text) -> tuple[tuple[int, int], ...]:
    """``--resize-schedule``'s ``"SIZE:EPOCHS,..."`` as ``((size, epochs), ...)``; ``"none"`` (or empty): ``()``."""
    text = str(text).strip()
    if text in ("", "none"):
        return ()
    stages = []
    for part in text.split(","):
        size, sep, epochs = part.partition(":")
        try:
            stage = (int(size), int(epochs))
        except ValueError:
            stage = None
        if not sep or stage is None or min(stage) < 1:
            raise ValueError(
                f"--resize-schedule must be SIZE:EPOCHS pairs of positive integers separated by commas (e.g. "
                f"16:5,22:4) or 'none', got {text!r}"
            )
        stages.append(stage)
    return tuple(stages)


def make_augment(recipe, image_shape, normalization=(0.0, 1.0)):
    """``--augment``: random crops with ``crop_padding`` (``--crop-padding``; 0: none) and horizontal flips, or
    ``None``; with a ``--resize-schedule``, an ``augment.by_epoch`` schedule that ends each stage's augmentation by
    scaling the images to its size (the last stage, full size, has none).

    The crops pad with black: the pixel value 0 in the units of the normalised
    data, ``(0 - mean) / std`` for ``normalization = (mean, std)``.
    """
    from tinyfn.train.augment import compose, progressive_resizing, random_crop, random_flip

    stages = resize_stages(recipe.get("resize_schedule", "none"))
    if not recipe["augment"] and not stages:
        return None
    if len(image_shape) != 3:
        flag = "--augment" if recipe["augment"] else "--resize-schedule"
        raise ValueError(f"{flag} needs images of shape (C, H, W), got {tuple(image_shape)}")
    base = None
    if recipe["augment"]:
        pad = recipe.get("crop_padding", 2)
        mean, std = normalization
        black = (0.0 - float(mean)) / float(std)
        base = compose(random_crop(padding=pad, fill=black), random_flip()) if pad else random_flip()
    return progressive_resizing(base, stages) if stages else base


def check_recipe(recipe, devices):
    """Flag values that cannot train, named as on the command line, before any data is read."""
    checks = (
        ("epochs", recipe["epochs"] >= 1, "a positive integer"),
        ("batch-size", recipe["batch_size"] >= 1, "a positive integer"),
        ("lr", recipe["lr"] > 0 and np.isfinite(recipe["lr"]), "a positive number"),
        ("momentum", 0 <= recipe["momentum"] < 1, "in [0, 1)"),
        ("weight-decay", recipe["weight_decay"] >= 0 and np.isfinite(recipe["weight_decay"]), "a non-negative number"),
        ("label-smoothing", 0 <= recipe["label_smoothing"] < 1, "in [0, 1)"),
        ("crop-padding", recipe["crop_padding"] >= 0, "a non-negative integer"),
        ("tta", recipe.get("tta", "none") in TTA_NAMES, f"one of {', '.join(TTA_NAMES)}"),
        ("decay", recipe.get("decay", "all") in DECAY_NAMES, f"one of {', '.join(DECAY_NAMES)}"),
        ("keep-best", recipe.get("keep_best", "none") in KEEP_BEST_NAMES, f"one of {', '.join(KEEP_BEST_NAMES)}"),
        ("patience", recipe.get("patience", 0) >= 0, "a non-negative integer (0: no early stopping)"),
    )
    for flag, ok, expected in checks:
        if not ok:
            raise ValueError(f"--{flag} must be {expected}, got {recipe[flag.replace('-', '_')]!r}")
    stages = resize_stages(recipe.get("resize_schedule", "none"))
    if sum(epochs for _, epochs in stages) >= recipe["epochs"]:
        raise ValueError(
            f"--resize-schedule {recipe['resize_schedule']} spans {sum(e for _, e in stages)} epochs of the run's "
            f"{recipe['epochs']}: at least the last epoch must train at full size, the size it is evaluated at"
        )
    if devices is not None and devices < 1:
        raise ValueError(f"--devices must be a positive integer, got {devices}")
    if not 0 <= recipe["val_fraction"] < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {recipe['val_fraction']}")
    if recipe.get("patience", 0) and not recipe["val_fraction"]:
        raise ValueError(
            f"--patience {recipe['patience']} stops on the validation loss, but --val-fraction 0 holds out no "
            "validation images"
        )


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
    """``(train_indices, val_indices)``: ``round(fraction * n)`` examples held out, chosen by ``seed``, each part
    sorted."""
    n_val = int(round(fraction * n))
    if n_val and n - n_val < 1:
        raise ValueError(f"--val-fraction {fraction} leaves no training images out of {n:,}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
