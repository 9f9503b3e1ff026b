"""``python -m tinyfn train``: train a CNN on held-out-validated data and write a run directory.

A run directory records the run's full recipe (every flag that shapes the run:
model, data, seed, precision, optimizer, learning rate and schedule, epochs,
batch size, validation share, augmentation, decay, ...) in its checkpoint.
``--resume`` takes the recipe from there: a flag that contradicts it is refused
by name, and ``--epochs`` may change only in a run with ``--schedule constant``
(a cosine or step schedule spans the run's own steps). ``command.txt`` keeps
every command of the run, each appended once the run is known to be valid.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from tinyfn.cli import train_flags
from tinyfn.cli.runs import (
    PRECISIONS,
    check_recipe,
    data_name,
    make_augment,
    make_optimizer,
    new_recipe,
    resize_stages,
    resumed_recipe,
    run_dir,
    run_recipe,
    train_loss,
    validation_split,
)


def add_arguments(p):
    """The flags of ``train``: what the data and model are, the recipe (each defaults to the recipe's), the run."""
    train_flags.data_and_model_flags(p.add_argument)
    train_flags.recipe_flags(p.add_argument)
    train_flags.selection_flags(p.add_argument)
    train_flags.run_flags(p.add_argument)


def run(args) -> int:
    from tinyfn.train import is_writer

    recipe, out, prior = plan_run(args)
    data = load_data(recipe)
    model = build_model(recipe, len(data.classes))
    check_resize_schedule(model, recipe, tuple(int(d) for d in data.train[0].shape[1:]))
    command = "python -m tinyfn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if is_writer():  # the run is known to be valid: only now is anything written (with several hosts, by process 0)
        record_command(out, command, append=args.resume)
    setup = make_setup(args, recipe, data, model, out, prior, command)
    if not args.quiet:
        announce(recipe, data, setup, out)
    t0 = time.perf_counter()
    try:
        with setup.formulation():
            result = train(args, recipe, data, model, setup, out)
    except KeyboardInterrupt as exc:
        for line in (str(exc), *getattr(exc, "__notes__", ())):
            if line:
                print(line, file=sys.stderr)
        print(f"stopped; resume with: python -m tinyfn train --out {shlex.quote(str(out))} --resume", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finish(recipe, data, model, setup, out, result, t0)
    return 0


def plan_run(args):
    """``(recipe, out, prior)``: a new run's recipe from the flags, or a resumed run's from its checkpoint
    (``prior``: the checkpoint's metadata; ``{}`` for a new run).

    A new run never replaces one: an ``--out`` that holds a checkpoint is refused
    (add ``--resume``, or choose another ``--out``) before anything is written.
    """
    from tinyfn.train import CHECKPOINT_NAME, load_checkpoint

    recipe = new_recipe(args)
    out = run_dir(args.out, args.resume, recipe["data"], recipe["model"])
    path = out / CHECKPOINT_NAME
    if not args.resume:
        if path.exists():
            raise ValueError(
                f"--out {out} holds a run already ({CHECKPOINT_NAME}): add --resume to continue it, or choose another "
                "--out"
            )
        check_recipe(recipe, args.devices)
        return recipe, out, {}
    if not path.is_file():
        raise FileNotFoundError(f"--resume: there is no run to resume in {out} (no {CHECKPOINT_NAME})")
    prior = load_checkpoint(path).metadata
    recipe = resumed_recipe(args, run_recipe(prior, out), out)
    check_recipe(recipe, args.devices)
    return recipe, out, prior


def load_data(recipe) -> SimpleNamespace:
    """The recipe's data: the training images split by ``val_fraction`` and ``seed``, all normalised by the
    statistics of the training part."""
    from tinyfn import data as D

    full_train, test_set = D.load_dataset(recipe["data"], "train"), D.load_dataset(recipe["data"], "test")
    train_idx, val_idx = validation_split(len(full_train), recipe["val_fraction"], recipe["seed"])
    if recipe["batch_size"] > len(train_idx):
        raise ValueError(
            f"--batch-size {recipe['batch_size']} is larger than the {len(train_idx):,} training images of "
            f"{recipe['data']}"
        )
    mean, std = D.normalization(full_train.images[train_idx])
    x_all = D.normalize(full_train.images, mean, std)
    return SimpleNamespace(
        train=(x_all[train_idx], full_train.labels[train_idx]),
        validation=(x_all[val_idx], full_train.labels[val_idx]) if len(val_idx) else None,
        test=(D.normalize(test_set.images, mean, std), test_set.labels),
        classes=list(full_train.classes),
        mean=mean,
        std=std,
        n_val=len(val_idx),
    )


def build_model(recipe, num_classes):
    """The recipe's model, computing in its ``precision``; a model that cannot is refused naming ``--precision``."""
    import jax.numpy as jnp

    from tinyfn.models import get_model

    dtype = PRECISIONS[recipe["precision"]]
    extra = {} if dtype is None else {"compute_dtype": jnp.dtype(dtype)}
    try:
        return get_model(recipe["model"], num_classes=num_classes, **extra)
    except ValueError as exc:
        if extra and "compute_dtype" in str(exc):
            raise ValueError(f"--precision {recipe['precision']}: {exc}") from None
        raise


def record_command(out: Path, command: str, *, append: bool):
    """Write ``command.txt``: the run's commands, one a line, a resumed run's appended (temp file, then rename)."""
    from tinyfn._files import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    path = out / "command.txt"
    before = path.read_text() if append and path.is_file() else ""
    atomic_write(path, lambda f: f.write((before + command + "\n").encode()))


def make_setup(args, recipe, data, model, out, prior, command) -> SimpleNamespace:
    """What ``fit`` needs beside the data: initial params and state, optimizer, augmentation, mesh, metadata."""
    import jax

    from tinyfn.layers import formulation, init_with_state
    from tinyfn.train import data_mesh, model_record

    init_key, fit_key = jax.random.split(jax.random.key(recipe["seed"]))
    input_shape = tuple(int(d) for d in data.train[0].shape[1:])
    _, params, model_state = init_with_state(model, init_key, (None, *input_shape))
    steps = len(data.train[0]) // recipe["batch_size"]
    chosen = args.formulation or prior.get("formulation", "auto")
    earlier = prior.get("commands") or ([prior["command"]] if prior.get("command") else [])
    commands = [*earlier, command]  # the run's first command, then each resume
    metadata = {
        "model": model_record(model, input_shape, name=recipe["model"], kwargs={"num_classes": len(data.classes)}),
        **{k: recipe[k] for k in ("data", "seed", "precision")},
        "formulation": chosen,
        "normalization": {"mean": data.mean, "std": data.std},
        "classes": data.classes,
        "recipe": recipe,
        "validation": {
            "fraction": recipe["val_fraction"],
            "images": data.n_val,
            "train_images": len(data.train[0]),
            "seed": recipe["seed"],
        },
        "command": commands[0],
        "commands": commands,
    }
    return SimpleNamespace(
        params=params,
        model_state=model_state,
        key=fit_key,
        metadata=metadata,
        input_shape=input_shape,
        optimizer=make_optimizer(recipe, steps * recipe["epochs"]),
        augment=make_augment(recipe, input_shape, normalization=(data.mean, data.std)),
        mesh=data_mesh(args.devices) if args.devices is not None else None,
        formulation=lambda: contextlib.nullcontext() if chosen == "auto" else formulation(chosen),
        formulation_name=chosen,
    )


def check_resize_schedule(model, recipe, input_shape):
    """``--resize-schedule``: refuse, before anything is written, a model whose params do not fit every stage's
    image size (a ``Flatten`` into a ``Linear``, say), from the shapes alone (no params are drawn)."""
    import jax

    from tinyfn.layers import init_with_state

    stages = resize_stages(recipe["resize_schedule"])
    if not stages:
        return

    def param_shapes(shape):
        params = jax.eval_shape(lambda k: init_with_state(model, k, shape)[1], jax.random.key(0))
        return jax.tree_util.tree_map(lambda a: a.shape, params)

    full = param_shapes((None, *input_shape))
    for size, _ in stages:
        try:
            small = param_shapes((None, input_shape[0], size, size))
        except (ValueError, TypeError) as exc:
            small, why = None, f": {exc}"
        if small == full:
            continue
        why = why if small is None else ": its params at that size differ from those at full size"
        raise ValueError(
            f"--resize-schedule {recipe['resize_schedule']}: --model {recipe['model']} cannot take "
            f"{size}x{size} images{why} (progressive resizing needs a model that pools globally before its "
            "classifier, such as resnet)"
        )


def announce(recipe, data, setup, out):
    """The one line that says what is about to be trained, and where it is written."""
    import jax

    n_params = sum(int(a.size) for a in jax.tree_util.tree_leaves(setup.params))
    where = f" on {setup.mesh.size} devices" if setup.mesh is not None else ""
    momentum = f"momentum {recipe['momentum']}, " if recipe["optimizer"] == "sgd" else ""
    crops = f"crops padded by {recipe['crop_padding']} + flips" if recipe["crop_padding"] else "flips"
    extras = "".join(
        (
            f", augmented ({crops})" if setup.augment else "",
            f", resized {recipe['resize_schedule']} (size:epochs)" if resize_stages(recipe["resize_schedule"]) else "",
            f", label smoothing {recipe['label_smoothing']}" if recipe["label_smoothing"] else "",
            f", test-time views {recipe['tta']}" if recipe["tta"] != "none" else "",
            f", {recipe['precision']}" if recipe["precision"] != "fp32" else "",
            "" if setup.formulation_name == "auto" else f", {setup.formulation_name}",
        )
    )
    decay = "" if recipe["decay"] == "all" else f" ({recipe['decay']} only)"
    print(
        f"training {recipe['model']} ({n_params:,} params){where} on {recipe['data']}: {len(data.train[0]):,} train / "
        f"{data.n_val:,} validation / "
        f"{len(data.test[0]):,} test images; {recipe['epochs']} epochs, batch {recipe['batch_size']}, "
        f"{recipe['optimizer']} lr {recipe['lr']} "
        f"({recipe['schedule']}), {momentum}weight decay {recipe['weight_decay']}{decay}{extras}; run directory {out}",
        flush=True,
    )


def train(args, recipe, data, model, setup, out):
    """``fit`` with the recipe, checkpointing into ``out`` (and resuming from it with ``--resume``)."""
    from tinyfn.losses import softmax_cross_entropy
    from tinyfn.train import METRICS_CSV, ConsoleLog, fit

    return fit(
        model,
        setup.params,
        data.train,
        epochs=recipe["epochs"],
        batch_size=recipe["batch_size"],
        optimizer=setup.optimizer,
        key=setup.key,
        eval_data=data.validation,
        checkpoint_dir=out,
        resume=args.resume,
        metadata=setup.metadata,
        quiet=args.quiet,
        mesh=setup.mesh,
        epoch_callbacks=() if args.quiet else (ConsoleLog(eval_label="val"),),
        on_nonfinite="skip" if args.skip_nonfinite else "stop",
        model_state=setup.model_state,
        augment=setup.augment,
        loss_fn=train_loss(recipe),
        eval_loss_fn=softmax_cross_entropy,
        keep_best=kept_best(recipe, data),
        patience=recipe.get("patience", 0) or None,
        log_csv=out / METRICS_CSV,
    )


def kept_best(recipe, data):
    """``fit``'s ``keep_best``: the recipe's metric when there is a validation split, else ``None``."""
    keep = recipe.get("keep_best", "none")
    return keep if keep != "none" and data.validation is not None else None


def best_params(recipe, data, out, result):
    """``(params, model_state, note)``: the best validation epoch's (from ``best.safetensors``) when the run kept
    it, with a ``note`` that says so; else the last epoch's and ``""``."""
    from tinyfn.train import BEST_NAME, Checkpoint, load_checkpoint

    params, history = result
    best, path = result.best_epoch, out / BEST_NAME
    if kept_best(recipe, data) is None or best is None or not path.is_file():
        return params, result.model_state, ""
    ckpt = load_checkpoint(path, like=Checkpoint(params, model_state=result.model_state))
    metric = recipe["keep_best"].replace("_", " ")
    value = history["eval_loss" if recipe["keep_best"] == "val_loss" else "eval_accuracy"][best - 1]
    note = (
        f"tested with the best validation epoch, {best} of {len(history['epoch'])} ({metric} {value:.4f}; its "
        f"checkpoint: {out / BEST_NAME})"
    )
    return ckpt.params, ckpt.model_state if ckpt.model_state is not None else {}, note


def finish(recipe, data, model, setup, out, result, t0):
    """The test set, once, at the end; then history.json, the curves and the confusion matrix (process 0 only)."""
    from tinyfn.train import (
        BEST_NAME,
        CHECKPOINT_NAME,
        METRICS_CSV,
        confusion_matrix,
        evaluate,
        is_writer,
        plot_confusion,
        plot_history,
    )
    from tinyfn.train.augment import TTA_VIEWS

    history = result.history
    params, model_state, note = best_params(recipe, data, out, result)
    views = TTA_VIEWS[recipe["tta"]]
    with setup.formulation():
        tested = evaluate(model, params, data.test, model_state=model_state, views=views)
    loss, acc, preds = tested
    single = (tested.view_loss[0], tested.view_accuracy[0]) if views else None  # views[0] is the image itself
    if not is_writer():
        return
    record = dict(
        history, validation=setup.metadata["validation"], test_loss=loss, test_accuracy=acc, tta=recipe["tta"]
    )
    record["tested_epoch"] = result.best_epoch if note else len(history["epoch"])
    if single:
        record.update(test_loss_single_view=single[0], test_accuracy_single_view=single[1])
    (out / "history.json").write_text(json.dumps(record, indent=1) + "\n")
    plot_history(
        history, out / "curves.png", title=f"{recipe['model']} on {data_name(recipe['data'])}", eval_label="validation"
    )
    plot_confusion(confusion_matrix(data.test[1], preds, len(data.classes)), data.classes, out / "confusion.png")
    kept = f", {BEST_NAME}" if note else ""
    print(
        f"wrote {out}/{CHECKPOINT_NAME}{kept}, {METRICS_CSV}, history.json, curves.png, confusion.png, command.txt "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    if result.stopped_early:
        metric = recipe["keep_best"] if recipe["keep_best"] != "none" else "val_loss"
        print(f"stopped early: {recipe['patience']} epochs without a better validation {metric[4:]}")
    if note:
        print(note)
    if single:
        print(f"test accuracy, single view: {single[1]:.4f}")
    tta = f" (test-time views: {recipe['tta']})" if views else ""
    print(f"test loss: {loss:.4f}{tta}")
    print(f"test accuracy: {acc:.4f}{tta}")
