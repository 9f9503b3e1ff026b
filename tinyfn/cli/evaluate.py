"""``python -m tinyfn evaluate``: test loss, accuracy and per-class accuracy of a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyfn.cli import positive_int
from tinyfn.cli.runs import TTA_NAMES


def add_arguments(p):
    p.add_argument(
        "checkpoint",
        type=Path,
        help="a run directory (its best validation epoch's checkpoint where it kept one) or a .safetensors file",
    )
    p.add_argument(
        "--last", action="store_true", help="with a run directory: its last checkpoint, not its best epoch's"
    )
    p.add_argument(
        "--data",
        default=None,
        help="'embedded', 'fashion-mnist' or an IDX directory (default: the data the run trained on)",
    )
    p.add_argument("--batch-size", type=positive_int, default=1000, help="images per evaluation batch (default 1000)")
    p.add_argument(
        "--tta",
        choices=TTA_NAMES,
        default=None,
        help=(
            "test-time augmentation: flip averages the class probabilities of each image and its mirror image "
            "(default: the run's recipe)"
        ),
    )


def chosen_checkpoint(path: Path, *, last: bool = False) -> Path:
    """A run directory's best validation epoch's checkpoint where it kept one (what ``train`` tested), else ``path``.

    ``last=True`` takes the run's last checkpoint instead; a file path is taken as it is.
    """
    from tinyfn.train import BEST_NAME, checkpoint_path

    if path.is_dir() and not last and (path / BEST_NAME).is_file():
        return path / BEST_NAME
    return checkpoint_path(path) if path.is_dir() else path


def run(args) -> int:
    from tinyfn import data as D
    from tinyfn.train import evaluate, load_model
    from tinyfn.train.augment import TTA_VIEWS

    path = chosen_checkpoint(args.checkpoint, last=args.last)
    loaded = load_model(path)  # a missing or unreadable checkpoint: main's one-line error
    model, params, meta = loaded
    data = args.data or meta.get("data", "embedded")
    test = D.load_dataset(data, "test")
    norm = meta.get("normalization") or {}
    x = D.normalize(test.images, norm.get("mean", 0.0), norm.get("std", 1.0))
    tta = args.tta or (meta.get("recipe") or {}).get("tta", "none")
    # evaluate refuses a batch whose logits are not finite (NaN params would predict class 0 everywhere)
    tested = evaluate(
        model,
        params,
        (x, test.labels),
        batch_size=args.batch_size,
        model_state=loaded.model_state,
        views=TTA_VIEWS[tta],
    )
    loss, acc, preds = tested
    views = "" if tta == "none" else f", test-time views: {tta}"
    print(f"{path} on {data} test ({len(test):,} images{views})")
    print(f"test loss: {loss:.4f}")
    print(f"test accuracy: {acc:.4f}")
    if tested.view_accuracy is not None:  # views[0] is the image itself
        print(f"test accuracy, single view: {tested.view_accuracy[0]:.4f}")
    print("per-class accuracy:")
    classes = meta.get("classes") or list(test.classes)
    for c, name in enumerate(classes):
        mask = test.labels == c
        if mask.any():
            print(f"  {c:>2} {name:<14} {np.mean(preds[mask] == c):.4f}  ({int(mask.sum())} images)")
    return 0
