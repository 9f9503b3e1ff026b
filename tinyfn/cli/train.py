"""``python -m tinyfn train``: train a CNN on held-out-validated data and write a run directory."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from tinyfn.cli.runs import RECIPES, VAL_FRACTION, check_recipe, data_name, run_dir, schedule, validation_split


def add_arguments(p):
    p.add_argument("--data", default="embedded", help="'embedded' (default: 8,000/2,000 images shipped with tinyfn), 'fashion-mnist' (the Debian location) or an IDX directory")
    p.add_argument("--model", default=None, help="a model of tinyfn.models.MODELS (default: lenet5 on embedded data, wide_cnn on full data)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=("cosine", "constant", "step"), default=None, help="learning-rate schedule (step: x0.1 after each third of the run)")
    p.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                   help=f"share of the training images held out for the per-epoch validation curve (default {VAL_FRACTION:.4f}: "
                        "5,000 of Fashion-MNIST's 60,000, 667 of the embedded 8,000; 0 for none); the test set is evaluated once, at the end")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<model>-<data>, a fresh one if that holds a run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (or the default run directory) from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("--skip-nonfinite", action="store_true", help="skip steps whose loss or gradients are NaN/Inf instead of stopping")
    p.add_argument("--devices", type=int, default=None, help="data-parallel over this many devices (jax.sharding; the batch size must divide by it)")


def run(args) -> int:
    import jax

    from tinyfn import data as D
    from tinyfn.models import get_model
    from tinyfn.train import (
        CHECKPOINT_NAME, ConsoleLog, confusion_matrix, data_mesh, evaluate, fit, is_writer, plot_confusion, plot_history, sgd,
    )  # fmt: skip

    recipe = dict(RECIPES["embedded" if args.data == "embedded" else "full"])
    for name in recipe:
        value = getattr(args, name, None)
        if value is not None:
            recipe[name] = value
    check_recipe(recipe, args.devices, args.val_fraction)
    mesh = data_mesh(args.devices) if args.devices is not None else None
    full_train, test_set = D.load_dataset(args.data, "train"), D.load_dataset(args.data, "test")
    train_idx, val_idx = validation_split(len(full_train), args.val_fraction, args.seed)
    if recipe["batch_size"] > len(train_idx):
        raise ValueError(f"--batch-size {recipe['batch_size']} is larger than the {len(train_idx):,} training images of {args.data}")
    mean, std = D.normalization(full_train.images[train_idx])
    x_all = D.normalize(full_train.images, mean, std)
    x_train, y_train = x_all[train_idx], full_train.labels[train_idx]
    validation = (x_all[val_idx], full_train.labels[val_idx]) if len(val_idx) else None
    x_test = D.normalize(test_set.images, mean, std)
    num_classes = len(full_train.classes)
    model = get_model(recipe["model"], num_classes=num_classes)
    out = run_dir(args.out, args.resume, args.data, recipe["model"])
    command = "python -m tinyfn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    writer = is_writer()  # with several hosts, only process 0 writes files
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        (out / "command.txt").write_text(command + "\n")

    key = jax.random.key(args.seed)
    init_key, fit_key = jax.random.split(key)
    input_shape = tuple(int(d) for d in x_train.shape[1:])
    _, params = model.init(init_key, (None, *input_shape))
    steps = len(x_train) // recipe["batch_size"]
    optimizer = sgd(schedule(recipe["schedule"], recipe["lr"], steps * recipe["epochs"]), momentum=recipe["momentum"], nesterov=recipe["momentum"] > 0, weight_decay=recipe["weight_decay"])
    metadata = {
        "model": {"name": recipe["model"], "kwargs": {"num_classes": num_classes}, "input_shape": list(input_shape)},
        "normalization": {"mean": mean, "std": std},
        "data": args.data,
        "classes": list(full_train.classes),
        "recipe": recipe,
        "validation": {"fraction": args.val_fraction, "images": len(val_idx), "train_images": len(train_idx), "seed": args.seed},
        "seed": args.seed,
        "command": command,
    }
    n_params = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
    if not args.quiet:
        where = f" on {mesh.size} devices" if mesh is not None else ""
        print(f"training {recipe['model']} ({n_params:,} params){where} on {args.data}: {len(x_train):,} train / {len(val_idx):,} validation / "
              f"{len(x_test):,} test images; {recipe['epochs']} epochs, batch {recipe['batch_size']}, SGD lr {recipe['lr']} ({recipe['schedule']}), "
              f"momentum {recipe['momentum']}, weight decay {recipe['weight_decay']}; run directory {out}", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    try:
        params, history = fit(
            model, params, (x_train, y_train), epochs=recipe["epochs"], batch_size=recipe["batch_size"],
            optimizer=optimizer, key=fit_key, eval_data=validation, checkpoint_dir=out,
            resume=args.resume, metadata=metadata, quiet=args.quiet, mesh=mesh,
            epoch_callbacks=() if args.quiet else (ConsoleLog(eval_label="val"),),
            on_nonfinite="skip" if args.skip_nonfinite else "stop",
        )  # fmt: skip
    except KeyboardInterrupt as exc:
        for line in (str(exc), *getattr(exc, "__notes__", ())):
            if line:
                print(line, file=sys.stderr)
        print(f"stopped; resume with: {command} --resume" + ("" if args.out else f" --out {out}"), file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    loss, acc, preds = evaluate(model, params, (x_test, test_set.labels))  # the test set, once, at the end
    if not writer:
        return 0
    record = dict(history, validation=metadata["validation"], test_loss=loss, test_accuracy=acc)
    (out / "history.json").write_text(json.dumps(record, indent=1) + "\n")
    plot_history(history, out / "curves.png", title=f"{recipe['model']} on {data_name(args.data)}", eval_label="validation")
    plot_confusion(confusion_matrix(test_set.labels, preds, num_classes), full_train.classes, out / "confusion.png")
    print(f"wrote {out}/{CHECKPOINT_NAME}, history.json, curves.png, confusion.png, command.txt ({time.perf_counter() - t0:.1f} s)")
    print(f"test loss: {loss:.4f}")
    print(f"test accuracy: {acc:.4f}")
    return 0
