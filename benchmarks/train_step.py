"""Time one SGD training step of tinyfn against its peers, interleaved in one process.

    python benchmarks/train_step.py [--model lenet5|wide] [--batch-size 128] [--steps 20] [--rounds 15]

Each round runs ``--steps`` steps of every implementation in turn (after a
warm-up that includes compilation), timing each step to completion. The table
gives the median, min and max ms/step over all rounds, images/s, GFLOP/s from
an analytic FLOP count (and its fraction of the measured float32 matmul peak),
minor page faults per step and the first (compiling) step; ``x tinyfn`` is
each median over tinyfn's. Before timing, every implementation's first losses
(its compiling step and the first warm-up step) must match tinyfn's (the same
weights, batch and step; otherwise the comparison is void and the script
stops). PyTorch runs twice: NCHW and channels-last (the net and the batch in
``torch.channels_last`` memory format). The line before the last gives tinyfn
against each layout, ``tinyfn/torch-nchw=... tinyfn/torch-channels-last=...``;
the last line, for scripts, is

    tinyfn/jax-autodiff=R1 tinyfn/torch=R2

(median ms/step ratios, R2 against PyTorch's faster layout; below 1 means tinyfn is faster; ``nan`` when a peer
did not run).

By default the script calls ``tinyfn.tune_allocator()`` first, as the
``tinyfn`` command line does, so glibc keeps the memory it frees (one arena,
256 MiB mmap threshold, 1 GiB trim threshold); the implementations share the
process, so all of them run so. ``--no-tune-allocator`` is the library's own
default (``import tinyfn`` changes nothing): glibc's defaults, under which
XLA's large temporaries are unmapped and faulted back in on every step, a page
fault per 4 KiB.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

if "--devices" in sys.argv and "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # several CPU devices must be asked for before JAX starts; harmless where GPUs are used
    n_devices = sys.argv[sys.argv.index("--devices") + 1]
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_devices}"
    ).strip()

import peers  # noqa: E402

import tinyfn  # noqa: E402

IMPLS = ("tinyfn", "jax_autodiff", "torch_eager", "torch_channels_last", "numpy_im2col", "tinyfn_matrix")
TORCH = ("torch_eager", "torch_channels_last")  # PyTorch's two layouts; tinyfn/torch is against the faster
# --devices N adds "tinyfn_sharded": the same step data-parallel over N devices, at the same global batch
LABELS = {
    "tinyfn": "tinyfn (handwritten VJPs, jit)",
    "jax_autodiff": "JAX lax.conv + reduce_window + grad, jit",
    "torch_eager": "PyTorch eager, NCHW",
    "torch_channels_last": "PyTorch eager, channels-last",
    "numpy_im2col": "numpy im2col, handwritten backward",
    "tinyfn_matrix": "tinyfn matrix form Y* = W* X*, jit",
    "tinyfn_sharded": "tinyfn data-parallel over {n} devices",
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(peers.MODELS), default="lenet5", help="wide: 32/64-channel CNN")
    ap.add_argument("--batch-size", type=int, default=128, help="32 to 512")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per implementation per round")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per implementation after the first")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="gpu: JAX on the GPU, PyTorch on CUDA")
    ap.add_argument(
        "--devices",
        type=int,
        default=None,
        help="also time tinyfn's step sharded over this many devices (on CPU: that many host devices)",
    )
    ap.add_argument("--only", nargs="+", choices=IMPLS, help="run only these implementations")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument(
        "--pause", type=float, default=0.2, help="seconds between implementations, so idle thread pools go to sleep"
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
    ap.add_argument("--no-peak", action="store_true", help="skip measuring the matmul peak")
    ap.add_argument("--quick", action="store_true", help="smoke test: batch 32, 2 steps x 2 rounds, no peak")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.rounds, args.warmup, args.no_peak, args.pause = 32, 2, 2, 1, True, 0.0
    if args.batch_size < 1 or args.steps < 1 or args.rounds < 1:
        ap.error("--batch-size, --steps and --rounds must be positive")
    return args


def matmul_peak(device, size=2048, reps=5):
    """Best float32 GFLOP/s of a ``size``² matrix product, by XLA (and numpy's BLAS on CPU)."""
    a = jax.device_put(jnp.asarray(np.random.default_rng(0).random((size, size), np.float32)), device)
    mm = jax.jit(jnp.dot)
    mm(a, a).block_until_ready()
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        mm(a, a).block_until_ready()
        best = max(best, 2 * size**3 / (time.perf_counter() - t) / 1e9)
    if device.platform == "cpu":
        an = np.asarray(a)
        for _ in range(reps):
            t = time.perf_counter()
            an @ an
            best = max(best, 2 * size**3 / (time.perf_counter() - t) / 1e9)
    return best


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def build(args, device):
    """The model, its params, a fixed batch, and ``{impl: run}`` for the implementations that can run."""
    model = peers.MODELS[args.model]()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, 1, 28, 28), np.float32)
    y = rng.integers(0, 10, args.batch_size).astype(np.int32)
    specs = peers.layer_specs(model, params, x.shape)
    runs, notes = {}, []
    for name in args.only or IMPLS:
        if name == "tinyfn":
            runs[name] = peers.tinyfn(model, params, x, y, args.lr, device)
        elif name == "tinyfn_matrix":
            why = peers.matrix_infeasible(specs)
            if why:
                notes.append(f"tinyfn_matrix skipped: {why}")
            else:
                runs[name] = peers.tinyfn_matrix(model, params, x, y, args.lr, device)
        elif name in TORCH and peers.torch_version() is None:
            notes.append(f"{name} skipped: PyTorch is not installed (pip install torch==2.13.0)")
        elif name == "numpy_im2col" and device.platform != "cpu":
            notes.append("numpy_im2col skipped: CPU only")
        else:
            runs[name] = getattr(peers, name)(model, params, x, y, args.lr, device, specs)
    if args.devices:
        from tinyfn.train import data_mesh

        devices = [d for d in jax.devices() if d.platform == device.platform]
        runs["tinyfn_sharded"] = peers.tinyfn(
            model, params, x, y, args.lr, device, mesh=data_mesh(devices[: args.devices])
        )
        LABELS["tinyfn_sharded"] = LABELS["tinyfn_sharded"].format(n=args.devices)
    return specs, runs, notes


def same_step(losses, rtol=2e-3, atol=2e-4):
    """The reference's first losses (tinyfn's, else the first implementation's); ``SystemExit`` when an
    implementation's differ: it computes another step, and timing it against the others would mean nothing."""
    ref_name = "tinyfn" if "tinyfn" in losses else next(iter(losses))
    ref = losses[ref_name]
    for name, got in losses.items():
        if not np.allclose(got, ref, rtol=rtol, atol=atol):
            raise SystemExit(f"{name} computes another step: first losses {got} against {ref_name}'s {ref}")
    return ref


def measure(runs, args):
    """First-step seconds, then interleaved rounds: ``({impl: (first_s, [step seconds], faults/step)}, the first
    losses)``; the first losses (the compiling step's and the first warm-up step's) must agree (``same_step``)."""
    first, times, flt, losses = {}, {k: [] for k in runs}, {k: 0 for k in runs}, {}
    for name, run in runs.items():
        t = time.perf_counter()
        losses[name] = [run()]
        first[name] = time.perf_counter() - t
        for i in range(args.warmup):
            loss = run()
            if i == 0:
                losses[name].append(loss)
    ref = same_step(losses)
    for _ in range(args.rounds):
        for name, run in runs.items():
            time.sleep(args.pause)
            f0 = faults()
            for _ in range(args.steps):
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
            flt[name] += faults() - f0
    n = args.rounds * args.steps
    return {k: (first[k], times[k], flt[k] / n) for k in runs}, ref


def report(args, specs, results, notes, peak, device):
    flops = peers.step_flops(specs, args.batch_size)
    print(
        f"# {args.model}, batch {args.batch_size}, float32, {device.platform} ({device.device_kind}); "
        f"{flops / 1e9:.3f} GFLOP/step; {args.rounds} rounds x {args.steps} steps, interleaved"
    )
    tuned = tinyfn._malloc.allocator_tuned()
    notes.append(
        "glibc allocator: "
        + (
            "tuned (tinyfn.tune_allocator)"
            if tuned
            else "defaults (--no-tune-allocator)"
            if not args.tune_allocator
            else "tuning failed"
        )
    )
    print(
        f"# python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}, "
        f"torch {peers.torch_version() or '-'}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    if peak:
        print(f"# float32 matmul peak measured: {peak:.0f} GFLOP/s")
    head = (
        f"| {'implementation':42s} | ms/step median | min | max | images/s | GFLOP/s |"
        f"{' % peak |' if peak else ''} x tinyfn | faults/step | first step s |"
    )
    print(head)
    print("|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|")
    base = np.median(results["tinyfn"][1]) if "tinyfn" in results else np.nan
    for name, (first, ts, flt) in results.items():
        med, lo, hi = np.median(ts) * 1e3, np.min(ts) * 1e3, np.max(ts) * 1e3
        gf = flops / (med / 1e3) / 1e9
        pk = f" {100 * gf / peak:.0f}% |" if peak else ""
        print(
            f"| {LABELS[name]:42s} | {med:.2f} | {lo:.2f} | {hi:.2f} | {args.batch_size / med * 1e3:,.0f} | "
            f"{gf:.1f} |{pk} "
            f"{med / 1e3 / base:.2f} | {flt:,.0f} | {first:.2f} |"
        )
    for note in notes:
        print(f"# {note}")
    nchw, cl, jx = (ratio(results, k) for k in ("torch_eager", "torch_channels_last", "jax_autodiff"))
    print(f"tinyfn/torch-nchw={nchw:.3f} tinyfn/torch-channels-last={cl:.3f}")
    print(f"tinyfn/jax-autodiff={jx:.3f} tinyfn/torch={np.fmax(nchw, cl):.3f}")


def ratio(results, name):
    """tinyfn's median ms/step over ``name``'s (``nan`` when either did not run)."""
    if "tinyfn" not in results or name not in results:
        return float("nan")
    return float(np.median(results["tinyfn"][1]) / np.median(results[name][1]))


def main(argv=None):
    args = parse_args(argv)
    if args.tune_allocator:
        tinyfn.tune_allocator()  # first, before XLA starts its threads, as the command line does
    device = jax.devices(args.device)[0]
    peak = None if args.no_peak else matmul_peak(device)
    with jax.default_device(device):
        specs, runs, notes = build(args, device)
        results, losses = measure(runs, args)
    notes.insert(0, f"first losses, every implementation: {', '.join(f'{v:.4f}' for v in losses)} (within 2e-3)")
    report(args, specs, results, notes, peak, device)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
