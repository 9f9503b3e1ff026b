"""``python -m tinyfn train`` and ``python -m tinyfn evaluate``."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

# The default recipe per data set (overridable flag by flag).
RECIPES = {
    "embedded": dict(model="lenet5", epochs=15, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine"),
    "full": dict(model="wide_cnn", epochs=12, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine"),
}


def add_train_arguments(p):
    p.add_argument("--data", default="embedded", help="'embedded' (default: 8,000/2,000 images shipped with tinyfn), 'fashion-mnist' (the Debian location) or an IDX directory")
    p.add_argument("--model", default=None, help="a model of tinyfn.models.MODELS (default: lenet5 on embedded data, wide_cnn on full data)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=("cosine", "constant", "step"), default=None, help="learning-rate schedule (step: x0.1 after each third of the run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<model>-<data>, a fresh one if that holds a run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (or the default run directory) from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("--skip-nonfinite", action="store_true", help="skip steps whose loss or gradients are NaN/Inf instead of stopping")
    p.add_argument("--devices", type=int, default=None, help="data-parallel over this many devices (jax.sharding; the batch size must divide by it)")


def _check_recipe(recipe, devices):
    """Flag values that cannot train, named as on the command line, before any data is read."""
    checks = (
        ("epochs", recipe["epochs"] >= 1, "a positive integer"),
        ("batch-size", recipe["batch_size"] >= 1, "a positive integer"),
        ("lr", recipe["lr"] > 0 and np.isfinite(recipe["lr"]), "a positive number"),
        ("momentum", 0 <= recipe["momentum"] < 1, "in [0, 1)"),
        ("weight-decay", recipe["weight_decay"] >= 0 and np.isfinite(recipe["weight_decay"]), "a non-negative number"),
    )
    for flag, ok, expected in checks:
        if not ok:
            raise ValueError(f"--{flag} must be {expected}, got {recipe[flag.replace('-', '_')]}")
    if devices is not None and devices < 1:
        raise ValueError(f"--devices must be a positive integer, got {devices}")


def _data_name(data: str) -> str:
    return data if data in ("embedded", "fashion-mnist") else Path(data).name or "idx"


def _run_dir(args, model_name: str) -> Path:
    if args.out is not None:
        return args.out
    base = Path("runs") / f"{model_name}-{_data_name(args.data)}"
    if args.resume or not (base / "checkpoint.safetensors").exists():
        return base
    n = 2
    while (base.parent / f"{base.name}-{n}" / "checkpoint.safetensors").exists():
        n += 1
    return base.parent / f"{base.name}-{n}"


def _schedule(name, lr, total_steps):
    from tinyfn.train import constant, cosine, step_decay

    if name == "cosine":
        return cosine(lr, total_steps, warmup_steps=min(total_steps // 20, 200))
    if name == "step":
        return step_decay(lr, max(-(-total_steps // 3), 1), 0.1)
    return constant(lr)


def train(args) -> int:
    import jax

    from tinyfn import data as D
    from tinyfn.models import get_model
    from tinyfn.train import confusion_matrix, data_mesh, evaluate, fit, is_writer, plot_confusion, plot_history, sgd

    recipe = dict(RECIPES["embedded" if args.data == "embedded" else "full"])
    for name in recipe:
        value = getattr(args, name, None)
        if value is not None:
            recipe[name] = value
    _check_recipe(recipe, args.devices)
    mesh = data_mesh(args.devices) if args.devices is not None else None
    train_set, test_set = D.load_dataset(args.data, "train"), D.load_dataset(args.data, "test")
    if recipe["batch_size"] > len(train_set):
        raise ValueError(f"--batch-size {recipe['batch_size']} is larger than the {len(train_set):,} training images of {args.data}")
    mean, std = D.normalization(train_set.images)
    x_train, x_test = D.normalize(train_set.images, mean, std), D.normalize(test_set.images, mean, std)
    num_classes = len(train_set.classes)
    model = get_model(recipe["model"], num_classes=num_classes)
    run_dir = _run_dir(args, recipe["model"])
    command = "python -m tinyfn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    writer = is_writer()  # with several hosts, only process 0 writes files
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "command.txt").write_text(command + "\n")

    key = jax.random.key(args.seed)
    init_key, fit_key = jax.random.split(key)
    input_shape = tuple(int(d) for d in x_train.shape[1:])
    _, params = model.init(init_key, (None, *input_shape))
    steps = len(x_train) // recipe["batch_size"]
    optimizer = sgd(_schedule(recipe["schedule"], recipe["lr"], steps * recipe["epochs"]), momentum=recipe["momentum"], nesterov=recipe["momentum"] > 0, weight_decay=recipe["weight_decay"])
    metadata = {
        "model": {"name": recipe["model"], "kwargs": {"num_classes": num_classes}, "input_shape": list(input_shape)},
        "normalization": {"mean": mean, "std": std},
        "data": args.data,
        "classes": list(train_set.classes),
        "recipe": recipe,
        "seed": args.seed,
        "command": command,
    }
    n_params = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
    if not args.quiet:
        where = f" on {mesh.size} devices" if mesh is not None else ""
        print(f"training {recipe['model']} ({n_params:,} params){where} on {args.data}: {len(x_train):,} train / {len(x_test):,} test images; "
              f"{recipe['epochs']} epochs, batch {recipe['batch_size']}, SGD lr {recipe['lr']} ({recipe['schedule']}), momentum "
              f"{recipe['momentum']}, weight decay {recipe['weight_decay']}; run directory {run_dir}", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    try:
        params, history = fit(
            model, params, (x_train, train_set.labels), epochs=recipe["epochs"], batch_size=recipe["batch_size"],
            optimizer=optimizer, key=fit_key, eval_data=(x_test, test_set.labels), checkpoint_dir=run_dir,
            resume=args.resume, metadata=metadata, quiet=args.quiet, mesh=mesh,
            on_nonfinite="skip" if args.skip_nonfinite else "stop",
        )  # fmt: skip
    except KeyboardInterrupt as exc:
        print(f"stopped; resume with: {command} --resume" + ("" if args.out else f" --out {run_dir}"), file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    loss, acc, preds = evaluate(model, params, (x_test, test_set.labels))
    if not writer:
        return 0
    (run_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    plot_history(history, run_dir / "curves.png", title=f"{recipe['model']} on {args.data}")
    plot_confusion(confusion_matrix(test_set.labels, preds, num_classes), train_set.classes, run_dir / "confusion.png")
    print(f"wrote {run_dir}/checkpoint.safetensors, history.json, curves.png, confusion.png, command.txt ({time.perf_counter() - t0:.1f} s)")
    print(f"test loss: {loss:.4f}")
    print(f"test accuracy: {acc:.4f}")
    return 0


def add_evaluate_arguments(p):
    p.add_argument("checkpoint", type=Path, help="a run directory or a .safetensors checkpoint")
    p.add_argument("--data", default=None, help="'embedded', 'fashion-mnist' or an IDX directory (default: the data the run trained on)")
    p.add_argument("--batch-size", type=int, default=1000)


def evaluate_command(args) -> int:
    from tinyfn import data as D
    from tinyfn.train import CheckpointError, evaluate, load_model

    try:
        model, params, meta = load_model(args.checkpoint)
    except (FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = args.data or meta.get("data", "embedded")
    test = D.load_dataset(data, "test")
    norm = meta.get("normalization") or {}
    x = D.normalize(test.images, norm.get("mean", 0.0), norm.get("std", 1.0))
    loss, acc, preds = evaluate(model, params, (x, test.labels), batch_size=args.batch_size)
    print(f"{args.checkpoint} on {data} test ({len(test):,} images)")
    print(f"test loss: {loss:.4f}")
    print(f"test accuracy: {acc:.4f}")
    print("per-class accuracy:")
    classes = meta.get("classes") or list(test.classes)
    for c, name in enumerate(classes):
        mask = test.labels == c
        if mask.any():
            print(f"  {c:>2} {name:<14} {np.mean(preds[mask] == c):.4f}  ({int(mask.sum())} images)")
    return 0
