"""Peak resident memory of a training process: the resnet recipe's net in tinyfn against the same net in PyTorch.

    python benchmarks/train_memory.py [--data fashion-mnist|builtin|IDX_DIR] [--steps 200] [--batch-size 128]
        [--no-tune-allocator]

Child processes, one after the other, each started from this small parent
(which imports neither JAX nor PyTorch: on Linux a child's ``ru_maxrss`` starts
from its parent's at ``exec``); each child's peak resident set is the
``ru_maxrss`` that ``os.wait4`` reports for it (KiB on Linux, shown in MiB):

1. **tinyfn**: loads the whole training set as ``python -m tinyfn train`` does
   (``tinyfn.data.load_dataset``, normalised by its own mean and standard
   deviation, held as float32: the resnet recipe keeps no validation split),
   calls ``tinyfn.tune_allocator()`` first as the command line does (unless
   ``--no-tune-allocator``), builds ``models.resnet()`` and trains it with
   ``tinyfn.train.fit`` for one epoch over the first ``steps x batch`` images
   (``fit`` shuffles them): ``steps`` steps of the recipe's AdamW
   (``RECIPES["resnet"]``: lr 4e-3 on its cosine schedule with warm-up over
   those steps, weight decay 5e-2 on filters and matrices), its random crops
   and flips and its label smoothing 0.1; no validation, no checkpoint, quiet.
   Before training it writes its initial weights (numpy) for the next child.
2. **PyTorch**: the same training set as one float32 tensor, the same net with
   the same initial weights (``resnet_step.torch_step`` from
   ``resnet_step._from_tinyfn``; importing ``resnet_step`` imports JAX and
   tinyfn, but no JAX computation runs), channels-last, ``torch.optim.AdamW``
   (``torch_step``'s: lr 1e-3, weight decay 5e-2), plain cross-entropy, no
   augmentation; the same ``steps`` batches of ``batch`` images of the first
   ``steps x batch``, in a random order.
3. **imports**: what the PyTorch child holds before it trains: ``import torch``
   and ``import resnet_step`` (JAX, tinyfn), nothing run.

Each training child also reports its steps/s after its first step (compilation
excluded). Without PyTorch the second and third rows are skipped with a note.
The last line, for scripts, is

    train_memory tinyfn_mib=A torch_mib=B ratio=A/B

(``nan`` for a child that did not run or failed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHILDREN = {
    "tinyfn": "tinyfn: models.resnet(), fit, the recipe's AdamW, crops, flips",
    "torch": "PyTorch: the same net, channels-last, AdamW",
    "imports": "PyTorch child's imports alone (torch, jax, tinyfn)",
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="fashion-mnist", help="fashion-mnist, builtin (the embedded subset), an IDX dir")
    ap.add_argument("--steps", type=int, default=200, help="training steps of each child")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--tune-allocator",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the tinyfn child calls tinyfn.tune_allocator() first, as the command line does (default)",
    )
    ap.add_argument("--child", choices=tuple(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        ap.error(f"--steps and --batch-size must be positive, got {args.steps} and {args.batch_size}")
    return args


# ----------------------------------------------------------------------------- children


def training_set(name, steps, batch_size):
    """The whole training set ``(x, y)`` as the command line loads it (float32, normalised by its mean and
    standard deviation), how many of its first images the ``steps`` batches use, and ``(mean, std)``."""
    from tinyfn import data as D

    full = D.load_dataset("embedded" if name == "builtin" else name, "train")
    stats = D.normalization(full.images)
    x = D.normalize(full.images, *stats)
    n = steps * batch_size
    if n > len(x):
        raise SystemExit(f"--steps {steps} x --batch-size {batch_size} = {n:,} images: {name} has {len(x):,}")
    return x, full.labels, n, stats


def _steps_per_s(stamps):
    """Steps per second after the first step (compilation excluded); ``nan`` with fewer than two."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")


def tinyfn_child(args):
    import jax
    import numpy as np

    import tinyfn
    from tinyfn import models
    from tinyfn.cli.runs import RECIPES, make_augment, make_optimizer, train_loss
    from tinyfn.layers import init_with_state
    from tinyfn.train import fit

    if args.tune_allocator:
        tinyfn.tune_allocator()  # first, before XLA starts its threads, as the command line does
    x, y, n, stats = training_set(args.data, args.steps, args.batch_size)
    recipe = dict(RECIPES["resnet"], batch_size=args.batch_size)
    model = models.resnet(num_classes=10)
    _, params, state = init_with_state(model, jax.random.key(0), (None, *x.shape[1:]))
    tmp = args.weights + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(jax.tree.map(np.asarray, (params, state)), f)
    os.replace(tmp, args.weights)
    stamps = []
    fit(
        model,
        params,
        (x[:n], y[:n]),
        epochs=1,
        batch_size=args.batch_size,
        optimizer=make_optimizer(recipe, args.steps),
        key=jax.random.key(1),
        model_state=state,
        augment=make_augment(recipe, x.shape[1:], normalization=stats),  # crops pad with black
        loss_fn=train_loss(recipe),
        quiet=True,
        epoch_callbacks=(),
        callbacks=[lambda info: stamps.append(time.perf_counter())],  # each after its step's loss is known
    )
    return len(stamps), _steps_per_s(stamps)


def torch_child(args):
    import inspect

    import numpy as np
    import resnet_step
    import torch

    from tinyfn import models

    with open(args.weights, "rb") as f:
        params, state = pickle.load(f)
    x, y, n, _ = training_set(args.data, args.steps, args.batch_size)
    d = {k: v.default for k, v in inspect.signature(models.resnet).parameters.items()}
    convs, head = resnet_step._from_tinyfn(params, state, d["width"], d["blocks_per_stage"], d["first_stride"])
    step = resnet_step.torch_step(
        convs, head, d["width"], d["blocks_per_stage"], d["first_stride"], True, d["stem_stride"]
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(n))
    stamps = []
    for i in range(args.steps):
        idx = order[i * args.batch_size : (i + 1) * args.batch_size]
        float(step(xt[idx].contiguous(memory_format=torch.channels_last), yt[idx]))
        stamps.append(time.perf_counter())
    return len(stamps), _steps_per_s(stamps)


def child(args):
    if args.child == "imports":
        import resnet_step  # noqa: F401
        import torch  # noqa: F401

        steps, rate = 0, float("nan")
    else:
        steps, rate = (tinyfn_child if args.child == "tinyfn" else torch_child)(args)
    print(f"child={args.child} steps={steps} steps_per_s={rate:.2f}", flush=True)


# ----------------------------------------------------------------------------- parent


def measure(name, args, weights):
    """Run one child: ``(peak RSS MiB, steps/s, None)``, or ``(nan, nan, why)`` when it failed."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--weights", weights]
    cmd += ["--data", args.data, "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    cmd += [] if args.tune_allocator else ["--no-tune-allocator"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE)
    with proc.stdout:
        out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    lines = out.strip().splitlines()
    last = lines[-1] if lines else ""
    if proc.returncode != 0 or not last.startswith(f"child={name} "):
        return float("nan"), float("nan"), f"failed (rc={proc.returncode}): {last[:160]}"
    rate = float(last.rsplit("steps_per_s=", 1)[1])
    return usage.ru_maxrss / 1024, rate, None  # ru_maxrss: KiB on Linux


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(args)
    has_torch = importlib.util.find_spec("torch") is not None  # finds it without importing it
    print(
        f"# {args.data}: {args.steps} steps of batch {args.batch_size}, one child process each, {os.cpu_count()} CPUs; "
        f"tinyfn's allocator {'tuned' if args.tune_allocator else 'glibc defaults'}"
    )
    print("| process | peak RSS MiB | steps/s |")
    print("|---|---|---|")
    mib = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in CHILDREN if has_torch else ("tinyfn",):
            peak, rate, why = measure(name, args, os.path.join(tmp, "weights.pkl"))
            mib[name] = peak
            cells = (why, "–") if why else (f"{peak:.1f}", "–" if rate != rate else f"{rate:.2f}")
            print(f"| {CHILDREN[name]} | {cells[0]} | {cells[1]} |", flush=True)
    if not has_torch:
        print("# PyTorch rows skipped: PyTorch is not installed (pip install torch==2.13.0)")
    a, b = mib["tinyfn"], mib.get("torch", float("nan"))
    print(f"train_memory tinyfn_mib={a:.1f} torch_mib={b:.1f} ratio={a / b:.3f}")


if __name__ == "__main__":
    main()
