"""Time whole training epochs through ``tinyfn.train.fit``.

    python benchmarks/epoch.py [--model lenet5|wide] [--data fashion_mnist|embedded] [--rounds 3] [--batch-size 128]

Reports the wall time and images/s of an epoch, the share of it spent outside
the jitted step (data handling, Python, the progress bar), the first step's
compile time and the peak resident memory of the whole run.

Each round runs one epoch through ``fit`` and then the same number of steps of
the bare jitted step (``make_train_step``, same model, optimizer and batch
size, the batches already on the device, dispatched back to back and waited
for once): rounds alternate, so that both see the same machine. The epoch is
clocked from its first step's end to its last step's end by a ``fit``
callback, so compilation is left out; the share outside is ``1 - t_bare /
t_fit`` of the medians. The last line, for scripts, is

    epoch_s=T images_per_s=R outside=F compile_s=C peak_mib=M
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import numpy as np
import peers  # noqa: E402

import tinyfn  # noqa: E402
from tinyfn import data, train  # noqa: E402
from tinyfn.losses import softmax_cross_entropy  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(peers.MODELS), default="lenet5")
    ap.add_argument("--data", choices=("fashion_mnist", "embedded"), default="fashion_mnist")
    ap.add_argument("--data-dir", default=None, help="where the Fashion-MNIST IDX files are (default: the loader's)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of one fit epoch and the bare steps")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument(
        "--progress", action="store_true", help="show fit's progress bar and epoch lines (counted as outside time)"
    )
    ap.add_argument(
        "--tune-allocator",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "call tinyfn.tune_allocator() first, as the tinyfn command line does (default); --no-tune-allocator: the "
            "library's default, glibc untouched"
        ),
    )
    ap.add_argument("--quick", action="store_true", help="smoke test: embedded data, 1 round of 20 steps")
    args = ap.parse_args(argv)
    args.max_steps = None
    if args.quick:
        args.data, args.rounds, args.max_steps = "embedded", 1, 20
    if args.rounds < 1 or args.batch_size < 1:
        ap.error("--rounds and --batch-size must be positive")
    return args


def load(args):
    ds = data.load_embedded("train") if args.data == "embedded" else data.load_fashion_mnist("train", args.data_dir)
    mean, std = data.normalization(ds.images)
    return data.normalize(ds.images, mean, std), ds.labels  # float32, as ``python -m tinyfn train`` feeds fit


def fit_epoch(model, params, images, labels, args, optimizer):
    """One ``fit`` epoch: (seconds per step from the first step's end to the last's, seconds to the first step's
    end)."""
    marks = []
    t0 = time.perf_counter()
    train.fit(
        model,
        params,
        (images, labels),
        epochs=1,
        batch_size=args.batch_size,
        optimizer=optimizer,
        key=jax.random.key(1),
        quiet=not args.progress,
        callbacks=[lambda info: marks.append(time.perf_counter())],
    )
    return (marks[-1] - marks[0]) / (len(marks) - 1), marks[0] - t0


def bare_steps(step, state, batches):
    """Seconds per step of ``step`` over ``batches`` (on the device), back to back, waited for once."""
    params, opt_state = state
    t = time.perf_counter()
    for x, y, key in batches:
        params, opt_state, metrics = step(params, opt_state, x, y, key)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - t) / len(batches), (params, opt_state)


def main(argv=None):
    args = parse_args(argv)
    tuned = tinyfn.tune_allocator() if args.tune_allocator else None  # first, before XLA starts its threads
    images, labels = load(args)
    if args.max_steps:
        images, labels = images[: args.max_steps * args.batch_size], labels[: args.max_steps * args.batch_size]
    model = peers.MODELS[args.model]()
    _, params = model.init(jax.random.key(0), (None, *images.shape[1:]))
    optimizer = train.sgd(args.lr, momentum=args.momentum)
    steps = len(images) // args.batch_size

    fit_s, bare_s, first_s = [], [], []
    per_step, first = fit_epoch(model, params, images, labels, args, optimizer)
    fit_s.append(per_step)
    first_s.append(first)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: data, fit and all

    step = train.make_train_step(model, softmax_cross_entropy, optimizer)
    order = np.random.default_rng(0).permutation(len(images))[: steps * args.batch_size].reshape(steps, -1)
    batches = [(*jax.device_put((images[i], labels[i])), jax.random.key(b)) for b, i in enumerate(order)]
    copy = jax.tree.map(lambda a: a.copy(), params)
    t = time.perf_counter()
    state = bare_steps(step, (copy, optimizer.init(copy)), batches[:1])[1]
    compile_s = time.perf_counter() - t

    for r in range(args.rounds):
        if r:
            per_step, first = fit_epoch(model, params, images, labels, args, optimizer)
            fit_s.append(per_step)
            first_s.append(first)
        per_step, state = bare_steps(step, state, batches)
        bare_s.append(per_step)
    t_fit, t_bare = float(np.median(fit_s)), float(np.median(bare_s))
    outside = 1.0 - t_bare / t_fit
    epoch_s = t_fit * steps

    print(
        f"# {args.model}, {args.data} ({len(images):,} images), batch {args.batch_size}, SGD lr {args.lr} momentum "
        f"{args.momentum}, "
        f"{args.rounds} rounds; jax {jax.__version__}; glibc allocator "
        + ("tuned" if tuned else "defaults" if tuned is None else "tuning failed")
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| steps per epoch | {steps:,} |")
    print(f"| epoch through fit (compilation excluded) | {epoch_s:.2f} s |")
    print(f"| images/s | {args.batch_size / t_fit:,.0f} |")
    print(f"| per step: fit / bare jitted step | {t_fit * 1e3:.2f} / {t_bare * 1e3:.2f} ms |")
    print(f"| outside the jitted step | {100 * outside:.1f}% |")
    print(
        f"| first step (compile + run) | {compile_s:.2f} s (fit, data staging included: {np.median(first_s):.2f} s) |"
    )
    print(f"| peak resident memory after the first fit epoch (data included) | {peak_mib:,.0f} MiB |")
    print(
        f"epoch_s={epoch_s:.3f} images_per_s={args.batch_size / t_fit:.0f} outside={outside:.3f} "
        f"compile_s={compile_s:.2f} peak_mib={peak_mib:.0f}"
    )


if __name__ == "__main__":
    main()
