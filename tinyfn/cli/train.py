"""``python -m tinyfn train``: train a CNN on held-out-validated data and write a run directory."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path

from tinyfn.cli.runs import (
    DECAY_NAMES, OPTIMIZERS, PRECISIONS, TTA_NAMES, VAL_FRACTION, check_recipe, data_name, make_augment, make_optimizer, recipe_for, run_dir, train_loss, validation_split,
)  # fmt: skip


def add_arguments(p):
    p.add_argument("--data", default="embedded", help="'embedded' (default: 8,000/2,000 images shipped with tinyfn), 'fashion-mnist' (the Debian location) or an IDX directory")
    p.add_argument("--model", default=None, help="a model of tinyfn.models.MODELS: lenet5, wide_cnn, resnet (default: lenet5 on embedded data, "
                   "wide_cnn on full data; resnet brings its own recipe: AdamW, cosine with warm-up, augmentation)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="sgd (Nesterov momentum), adam or adamw (decoupled weight decay); default: the recipe's")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crops and horizontal flips, on the device inside the step (default: the recipe's; on for resnet)")
    p.add_argument("--crop-padding", type=int, default=None,
                   help="with --augment: pad by this many pixels, then crop back at a random offset (default: the recipe's; 0: flips only)")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                   help="bf16: convolutions and linear layers compute in bfloat16, params and the loss stay float32 (lenet5, wide_cnn)")
    p.add_argument("--formulation", choices=("auto", "im2col", "xla", "direct"), default="auto",
                   help="how the convolutions and pooling are evaluated (auto: the backend's default; see README 'Speed')")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--decay", choices=DECAY_NAMES, default=None,
                   help="which params the weight decay applies to: all, or weights (filters and weight matrices; not batch norm's scale and shift nor biases); default: the recipe's")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="train on targets (1 - e) onehot + e/K (default: the recipe's); validation and test losses stay the plain cross-entropy")
    p.add_argument("--tta", choices=TTA_NAMES, default=None,
                   help="test-time augmentation of the final test evaluation: flip averages the class probabilities of each image and its mirror "
                        "image (default: the recipe's; flip for resnet); the single-view test accuracy is reported beside it")  # fmt: skip
    p.add_argument("--schedule", choices=("cosine", "constant", "step"), default=None, help="learning-rate schedule (step: x0.1 after each third of the run)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help=f"share of the training images held out for the per-epoch validation curve (default: the recipe's, {VAL_FRACTION:.4f}: "
                        "5,000 of Fashion-MNIST's 60,000, 667 of the embedded 8,000; 0 for resnet, which trains on all of them; 0 for none); "
                        "the test set is evaluated once, at the end")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<model>-<data>, a fresh one if that holds a run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (or the default run directory) from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("--skip-nonfinite", action="store_true", help="skip steps whose loss or gradients are NaN/Inf instead of stopping")
    p.add_argument("--devices", type=int, default=None, help="data-parallel over this many devices (jax.sharding; the batch size must divide by it)")


def run(args) -> int:
    import jax

    from tinyfn import data as D
    import jax.numpy as jnp

    from tinyfn.layers import formulation, init_with_state
    from tinyfn.losses import softmax_cross_entropy
    from tinyfn.models import get_model
    from tinyfn.train.augment import TTA_VIEWS
    from tinyfn.train import (
        CHECKPOINT_NAME, ConsoleLog, confusion_matrix, data_mesh, evaluate, fit, is_writer, model_record, plot_confusion, plot_history,
    )  # fmt: skip

    recipe = recipe_for(args.data, args.model)
    for name in recipe:
        value = getattr(args, name, None)
        if value is not None:
            recipe[name] = value
    check_recipe(recipe, args.devices)
    mesh = data_mesh(args.devices) if args.devices is not None else None
    full_train, test_set = D.load_dataset(args.data, "train"), D.load_dataset(args.data, "test")
    train_idx, val_idx = validation_split(len(full_train), recipe["val_fraction"], args.seed)
    if recipe["batch_size"] > len(train_idx):
        raise ValueError(f"--batch-size {recipe['batch_size']} is larger than the {len(train_idx):,} training images of {args.data}")
    mean, std = D.normalization(full_train.images[train_idx])
    x_all = D.normalize(full_train.images, mean, std)
    x_train, y_train = x_all[train_idx], full_train.labels[train_idx]
    validation = (x_all[val_idx], full_train.labels[val_idx]) if len(val_idx) else None
    x_test = D.normalize(test_set.images, mean, std)
    num_classes = len(full_train.classes)
    extra = {} if PRECISIONS[args.precision] is None else {"compute_dtype": jnp.dtype(PRECISIONS[args.precision])}
    try:
        model = get_model(recipe["model"], num_classes=num_classes, **extra)
    except ValueError as exc:
        if extra and "compute_dtype" in str(exc):
            raise ValueError(f"--precision {args.precision}: {exc}") from None
        raise
    out = run_dir(args.out, args.resume, args.data, recipe["model"])
    command = "python -m tinyfn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    writer = is_writer()  # with several hosts, only process 0 writes files
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        (out / "command.txt").write_text(command + "\n")

    key = jax.random.key(args.seed)
    init_key, fit_key = jax.random.split(key)
    input_shape = tuple(int(d) for d in x_train.shape[1:])
    _, params, model_state = init_with_state(model, init_key, (None, *input_shape))
    steps = len(x_train) // recipe["batch_size"]
    optimizer = make_optimizer(recipe, steps * recipe["epochs"])
    augment = make_augment(recipe, input_shape, normalization=(mean, std))
    metadata = {
        "model": model_record(model, input_shape, name=recipe["model"], kwargs={"num_classes": num_classes}),
        "precision": args.precision,
        "formulation": args.formulation,
        "normalization": {"mean": mean, "std": std},
        "data": args.data,
        "classes": list(full_train.classes),
        "recipe": recipe,
        "validation": {"fraction": recipe["val_fraction"], "images": len(val_idx), "train_images": len(train_idx), "seed": args.seed},
        "seed": args.seed,
        "command": command,
    }
    n_params = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
    if not args.quiet:
        where = f" on {mesh.size} devices" if mesh is not None else ""
        momentum = f"momentum {recipe['momentum']}, " if recipe["optimizer"] == "sgd" else ""
        crops = f"crops padded by {recipe['crop_padding']} + flips" if recipe["crop_padding"] else "flips"
        extras = (f", augmented ({crops})" if augment else "") + (f", label smoothing {recipe['label_smoothing']}" if recipe["label_smoothing"] else "") + (f", test-time views {recipe['tta']}" if recipe["tta"] != "none" else "") + (f", {args.precision}" if extra else "") + ("" if args.formulation == "auto" else f", {args.formulation}")
        print(f"training {recipe['model']} ({n_params:,} params){where} on {args.data}: {len(x_train):,} train / {len(val_idx):,} validation / "
              f"{len(x_test):,} test images; {recipe['epochs']} epochs, batch {recipe['batch_size']}, {recipe['optimizer']} lr {recipe['lr']} "
              f"({recipe['schedule']}), {momentum}weight decay {recipe['weight_decay']}{'' if recipe['decay'] == 'all' else ' (' + recipe['decay'] + ' only)'}{extras}; run directory {out}", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    def forced():  # the --formulation of the ops traced inside (the step is traced on its first call, in fit)
        return contextlib.nullcontext() if args.formulation == "auto" else formulation(args.formulation)

    try:
        with forced():
            result = fit(
                model, params, (x_train, y_train), epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                optimizer=optimizer, key=fit_key, eval_data=validation, checkpoint_dir=out,
                resume=args.resume, metadata=metadata, quiet=args.quiet, mesh=mesh,
                epoch_callbacks=() if args.quiet else (ConsoleLog(eval_label="val"),),
                on_nonfinite="skip" if args.skip_nonfinite else "stop", model_state=model_state, augment=augment,
                loss_fn=train_loss(recipe), eval_loss_fn=softmax_cross_entropy,
            )  # fmt: skip
        params, history = result
    except KeyboardInterrupt as exc:
        for line in (str(exc), *getattr(exc, "__notes__", ())):
            if line:
                print(line, file=sys.stderr)
        print(f"stopped; resume with: {command} --resume" + ("" if args.out else f" --out {out}"), file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    views = TTA_VIEWS[recipe["tta"]]
    with forced():  # the test set, once, at the end
        tested = evaluate(model, params, (x_test, test_set.labels), model_state=result.model_state, views=views)
    loss, acc, preds = tested
    single = (tested.view_loss[0], tested.view_accuracy[0]) if views else None  # views[0] is the image itself
    if not writer:
        return 0
    record = dict(history, validation=metadata["validation"], test_loss=loss, test_accuracy=acc, tta=recipe["tta"])
    if single:
        record.update(test_loss_single_view=single[0], test_accuracy_single_view=single[1])
    (out / "history.json").write_text(json.dumps(record, indent=1) + "\n")
    plot_history(history, out / "curves.png", title=f"{recipe['model']} on {data_name(args.data)}", eval_label="validation")
    plot_confusion(confusion_matrix(test_set.labels, preds, num_classes), full_train.classes, out / "confusion.png")
    print(f"wrote {out}/{CHECKPOINT_NAME}, history.json, curves.png, confusion.png, command.txt ({time.perf_counter() - t0:.1f} s)")
    if single:
        print(f"test accuracy, single view: {single[1]:.4f}")
    tta = f" (test-time views: {recipe['tta']})" if views else ""
    print(f"test loss: {loss:.4f}{tta}")
    print(f"test accuracy: {acc:.4f}{tta}")
    return 0
