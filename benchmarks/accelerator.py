"""The GPU check: tinyfn's training step on an accelerator against JAX autodiff and PyTorch, in one call.

    PYTHONPATH=. python3 benchmarks/accelerator.py                # a CUDA GPU: a few minutes, bounded by --budget
    PYTHONPATH=. python3 benchmarks/accelerator.py --device cpu   # the same sections with tiny settings (smoke test)

Nothing is downloaded: it needs jax (with CUDA for the GPU), numpy and, for the
PyTorch column, torch (with CUDA). It prints, in this order:

1. per-step ms (median over interleaved rounds, each step timed to completion)
   of LeNet-5 and the 32/64-channel CNN (without dropout, as in ``peers``) at
   each batch size, for tinyfn under each formulation
   (``tinyfn.layers.FORMULATIONS``; just the default where this tinyfn has no
   ``tinyfn.layers.formulation``), JAX autodiff (``lax.conv_general_dilated`` +
   ``jax.grad``) and PyTorch eager, with the first step's time (compilation
   included) and the compile time (first step minus the median);
2. bfloat16 products (``compute_dtype=``, where this tinyfn offers it) against
   float32 at the largest batch, tinyfn's default formulation;
3. correctness: 10 SGD steps on the device against the same 10 steps on the
   CPU (same params, batches and keys; float32 products at full precision on
   both), the largest loss and parameter differences relative to their size,
   ``ok`` within float32 tolerance, one line per formulation;
4. one epoch through ``tinyfn.train.fit`` on the full Fashion-MNIST training
   set when its IDX files are present, else on the embedded subset;
5. the ResNet's and the ViT's training steps at batch 128 (``resnet_step.py``
   and ``vit_step.py`` on the device, tinyfn against JAX autodiff; their
   PyTorch peers run on the CPU only, so they are left out here), each ending
   with its ``resnet ...`` / ``vit ...`` ratio line.

The last line, for scripts, is

    PLATFORM tinyfn/jax-autodiff=R1 tinyfn/torch=R2

for LeNet-5 at the largest batch with tinyfn's default formulation on that
platform: median ms/step ratios, below 1 when tinyfn is faster (``nan`` when a
peer did not run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import peers

from tinyfn import data, layers, losses, models, train

GPU = dict(
    models=("lenet5", "wide"),
    batch_sizes=(128, 1024),
    rounds=7,
    round_s=0.25,
    max_steps=50,
    correctness_batch=128,
    epoch_images=None,
    budget=330.0,
)
CPU = dict(
    models=("lenet5",),
    batch_sizes=(8,),
    rounds=2,
    round_s=0.0,
    max_steps=2,
    correctness_batch=8,
    epoch_images=256,
    budget=float("inf"),
)
CORRECTNESS_STEPS = 10
CORRECTNESS_RTOL = 1e-4  # float32 after 10 steps: summation order and kernel choice only


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu", help="cpu: tiny settings unless given below")
    ap.add_argument("--models", nargs="+", choices=sorted(peers.MODELS), help="default lenet5 wide (gpu), lenet5 (cpu)")
    ap.add_argument("--batch-sizes", nargs="+", type=int, help="default 128 1024 (gpu), 8 (cpu)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per table (default 7 gpu, 2 cpu)")
    ap.add_argument("--round-s", type=float, help="seconds of steps per implementation per round (default 0.25 gpu)")
    ap.add_argument("--max-steps", type=int, help="at most this many steps per implementation per round")
    ap.add_argument(
        "--epoch-images", type=int, help="limit the fit epoch to this many images (default: all on gpu, 256 on cpu)"
    )
    ap.add_argument(
        "--budget",
        type=float,
        help="seconds after which the remaining sections are skipped (default 330 on gpu, none on cpu)",
    )
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args(argv)
    for name, value in (GPU if args.device == "gpu" else CPU).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if min(args.batch_sizes) < 1 or args.rounds < 1 or args.max_steps < 1:
        ap.error("--batch-sizes, --rounds and --max-steps must be positive")
    return args


def say(*parts):
    print(*parts, flush=True)


# ----------------------------------------------------------------------------- formulations and precision


def formulations(platform_name):
    """``(names to measure, the platform's default, a note)`` from ``tinyfn.layers``' formulation API."""
    if getattr(layers, "formulation", None) is None:
        return (
            ("default",),
            "default",
            "tinyfn.layers.formulation is absent in this tinyfn: only its default evaluation is measured",
        )
    names = tuple(getattr(layers, "FORMULATIONS", ()))
    default = layers.default_formulation(platform_name) if hasattr(layers, "default_formulation") else names[0]
    return names, default, f"formulations {', '.join(names)}; default on {platform_name}: {default}"


def using(name):
    """The context in which tinyfn's ops are traced (and every call is made) with formulation ``name``."""
    return contextlib.nullcontext() if name == "default" else layers.formulation(name)


def with_formulation(run, name):
    def run_in():
        with using(name):
            return run()

    return run_in


def full_precision():
    """float32 products at full precision (no TF32 on GPUs that would use it), for the correctness check."""
    ctx = getattr(jax, "default_matmul_precision", None)
    return ctx("highest") if ctx is not None else contextlib.nullcontext()


# ----------------------------------------------------------------------------- timing


class Timed:
    """One implementation's ``run`` with its first-step seconds and every timed step."""

    def __init__(self, label, make):
        self.label, self.first, self.times, self.steps, self.error = label, None, [], 1, None
        try:
            self.run = make()
            t = time.perf_counter()
            self.run()
            self.first = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001 -- a formulation or peer that cannot run this model is reported, not fatal
            self.run, self.error = None, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"

    def calibrate(self, round_s, max_steps):
        """Steps per round so that a round of this implementation takes about ``round_s`` seconds."""
        t = time.perf_counter()
        self.run()
        one = time.perf_counter() - t
        self.steps = max(1, min(max_steps, int(round_s / max(one, 1e-6))))  # a slow step: once per round

    def median_ms(self):
        return float(np.median(self.times)) * 1e3 if self.times else float("nan")


def interleave(timed, args, deadline=float("inf")):
    """Rounds in which every implementation that runs takes its turn, every step waited for and timed;
    after the first round, none is started past ``deadline`` (``time.perf_counter()``). Returns the rounds run."""
    live = [t for t in timed if t.run is not None]
    for t in live:
        t.calibrate(args.round_s, args.max_steps)
    for done in range(args.rounds):
        if done and time.perf_counter() > deadline:
            return done
        for t in live:
            for _ in range(t.steps):
                start = time.perf_counter()
                t.run()
                t.times.append(time.perf_counter() - start)
    return args.rounds


def batch(batch_size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((batch_size, 1, 28, 28), np.float32), rng.integers(0, 10, batch_size).astype(np.int32)


def step_table(args, device, forms, default_form, deadline):
    """Section 1: ``{(model, batch): {key: Timed}}`` with keys ``tinyfn[f]``, ``jax_autodiff``, ``torch_eager``;
    the tables share the time left until ``deadline`` equally (fewer rounds where it runs short)."""
    say(
        f"\n## Training step, float32, {device.platform} ({device.device_kind}): ms/step, median of {args.rounds} "
        "interleaved rounds"
    )
    say(
        "| model | batch | implementation | ms/step median | min | images/s | x JAX autodiff | "
        "first step s | compile s |"
    )
    say("|---|---|---|---|---|---|---|---|---|")
    results, notes = {}, []
    groups = [(m, b) for m in args.models for b in args.batch_sizes]
    for index, (model_name, batch_size) in enumerate(groups):
        model = peers.MODELS[model_name]()
        _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
        x, y = batch(batch_size)
        specs = peers.layer_specs(model, params, x.shape)
        timed = {}
        for f in forms:
            label = f"tinyfn [{f}{' = default' if f == default_form and f != 'default' else ''}]"
            timed[f"tinyfn[{f}]"] = Timed(
                label, lambda f=f: tinyfn_step(f, lambda: peers.tinyfn(model, params, x, y, args.lr, device))
            )
        timed["jax_autodiff"] = Timed(
            "JAX lax.conv + grad, jit", lambda: peers.jax_autodiff(model, params, x, y, args.lr, device, specs)
        )
        if peers.torch_version() is None:
            notes.append("PyTorch skipped: torch is not installed")
        else:
            timed["torch_eager"] = Timed(
                "PyTorch eager" + (" (CUDA)" if device.platform == "gpu" else ""),
                lambda: _torch(model, params, x, y, args.lr, device, specs),
            )
        share = (deadline - time.perf_counter()) / (len(groups) - index)
        rounds = interleave(timed.values(), args, time.perf_counter() + share)
        if rounds < args.rounds:
            notes.append(f"{model_name}, batch {batch_size}: {rounds} of {args.rounds} rounds (time budget)")
        base = timed["jax_autodiff"].median_ms()
        for t in timed.values():
            if t.error:
                say(f"| {model_name} | {batch_size} | {t.label} | – | – | – | – | – | – |")
                notes.append(f"{model_name}, batch {batch_size}, {t.label}: {t.error}")
                continue
            med = t.median_ms()
            say(
                f"| {model_name} | {batch_size} | {t.label} | {med:.3f} | {min(t.times) * 1e3:.3f} | "
                f"{batch_size / med * 1e3:,.0f} | "
                f"{med / base:.2f} | {t.first:.2f} | {max(t.first - med / 1e3, 0.0):.2f} |"
            )
        for t in timed.values():
            t.run = None  # release the device buffers before the next table
        results[(model_name, batch_size)] = timed
    return results, notes


def tinyfn_step(name, make):
    """``make()``'s step built, traced and always called under formulation ``name``."""
    with using(name):
        return with_formulation(make(), name)


def _torch(model, params, x, y, lr, device, specs):
    if device.platform == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
    return peers.torch_eager(model, params, x, y, lr, device, specs)


# ----------------------------------------------------------------------------- bf16


def precision_table(args, device, default_form):
    """Section 2: the default formulation with float32 against bfloat16 products, at the largest batch."""
    batch_size = max(args.batch_sizes)
    say(
        f"\n## Mixed precision at batch {batch_size}: float32 vs bfloat16 products (params float32), tinyfn "
        f"[{default_form}]"
    )
    if not peers.supports_compute_dtype():
        say("# skipped: this tinyfn's Conv2D/Linear take no compute_dtype")
        return
    say("| model | compute dtype | ms/step median | images/s | bf16 / f32 | first step s |")
    say("|---|---|---|---|---|---|")
    for model_name in args.models:
        x, y = batch(batch_size)
        timed = {}
        for dtype_name, dtype in (("float32", None), ("bfloat16", jnp.bfloat16)):
            model = peers.MODELS[model_name](compute_dtype=dtype)
            _, params = peers.MODELS[model_name]().init(
                jax.random.key(0), (None, 1, 28, 28)
            )  # float32 params either way
            make = lambda model=model, params=params: peers.tinyfn(model, params, x, y, args.lr, device)  # noqa: E731
            timed[dtype_name] = Timed(dtype_name, lambda make=make: tinyfn_step(default_form, make))
        interleave(timed.values(), args)
        f32 = timed["float32"].median_ms()
        for name, t in timed.items():
            if t.error:
                say(f"| {model_name} | {name} | – | – | – | – |")
                say(f"# {model_name} {name}: {t.error}")
                continue
            med = t.median_ms()
            say(
                f"| {model_name} | {name} | {med:.3f} | {batch_size / med * 1e3:,.0f} | {med / f32:.2f} | "
                f"{t.first:.2f} |"
            )


# ----------------------------------------------------------------------------- correctness


def ten_steps(model, params, batches, device, form):
    """Losses and final params of SGD steps (momentum 0.9) over ``batches`` on ``device``, formulation ``form``."""
    optimizer = train.sgd(0.05, momentum=0.9)
    with using(form), full_precision():
        step = train.make_train_step(model, losses.softmax_cross_entropy, optimizer)
        p = jax.tree.map(lambda a: jnp.array(a, copy=True), jax.device_put(params, device))
        state = optimizer.init(p)
        out = []
        for i, (x, y) in enumerate(batches):
            p, state, metrics = step(
                p,
                state,
                jax.device_put(x, device),
                jax.device_put(y, device),
                jax.device_put(jax.random.key(i), device),
            )
            out.append(float(metrics["loss"]))
    return np.array(out), [np.asarray(a) for a in jax.tree.leaves(p)]


def correctness(args, device, forms):
    """Section 3: ``CORRECTNESS_STEPS`` steps of LeNet-5 on ``device`` under each formulation against the CPU's
    default."""
    cpu = jax.devices("cpu")[0]
    n = args.correctness_batch
    ds = data.load_embedded("train")
    images, labels = ds.images[: CORRECTNESS_STEPS * n], ds.labels[: CORRECTNESS_STEPS * n]
    x = data.normalize(images, *data.normalization(images))
    batches = [(x[i * n : (i + 1) * n], labels[i * n : (i + 1) * n]) for i in range(CORRECTNESS_STEPS)]
    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    say(
        f"\n## Correctness: {CORRECTNESS_STEPS} SGD steps of LeNet-5 (batch {n}, embedded data) on {device.platform} "
        "against the CPU's default, float32 at full precision"
    )
    ref_loss, ref_params = ten_steps(model, params, batches, cpu, "default")
    all_ok = True
    for f in forms:
        try:
            loss, got = ten_steps(model, params, batches, device, f)
        except Exception as e:  # noqa: BLE001
            say(
                f"correctness {device.platform}[{f}] vs cpu[default]: could not run: {type(e).__name__}: "
                f"{str(e).splitlines()[0][:160]}"
            )
            all_ok = False
            continue
        dloss = float(np.max(np.abs(loss - ref_loss)) / np.max(np.abs(ref_loss)))
        dparam = max(
            float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)) for a, b in zip(got, ref_params, strict=True)
        )
        ok = dloss <= CORRECTNESS_RTOL and dparam <= CORRECTNESS_RTOL and np.all(np.isfinite(loss))
        all_ok &= bool(ok)
        say(
            f"correctness {device.platform}[{f}] vs cpu[default]: max |Δloss|/|loss| = {dloss:.2e}, max "
            f"|Δparam|/max|param| = {dparam:.2e} "
            f"(tolerance {CORRECTNESS_RTOL:.0e}, final loss {loss[-1]:.4f}): {'ok' if ok else 'FAIL'}"
        )
    return all_ok


# ----------------------------------------------------------------------------- a fit epoch


def fit_epoch(args, device):
    """Section 4: one epoch of LeNet-5 through ``fit`` (batch 128, the platform's default formulation)."""
    try:
        ds, source = data.load_fashion_mnist("train"), "Fashion-MNIST"
    except Exception as e:  # noqa: BLE001 -- absent or unreadable files: the embedded subset instead
        ds, source = data.load_embedded("train"), f"embedded subset (Fashion-MNIST not found: {type(e).__name__})"
    images, labels = ds.images, ds.labels
    if args.epoch_images:
        images, labels = images[: args.epoch_images], labels[: args.epoch_images]
    x = data.normalize(images, *data.normalization(images))
    batch_size = min(128, len(labels))
    say(f"\n## One epoch through fit: LeNet-5, {source}, {len(labels):,} images, batch {batch_size}, SGD momentum 0.9")
    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    on_device = getattr(jax, "default_device", None)
    with on_device(device) if on_device is not None else contextlib.nullcontext():
        t = time.perf_counter()
        _, history = train.fit(
            model,
            params,
            (x, labels),
            epochs=1,
            batch_size=batch_size,
            optimizer=train.sgd(0.05, momentum=0.9),
            key=jax.random.key(1),
            quiet=True,
        )
        wall = time.perf_counter() - t
    steps = len(labels) // batch_size
    say(
        f"epoch wall {wall:.2f} s (compilation included), {steps * batch_size / wall:,.0f} images/s; train loss "
        f"{history['train_loss'][-1]:.4f}"
    )


# ----------------------------------------------------------------------------- main


def network_steps(args, device):
    """Section 5: ``resnet_step.py`` and ``vit_step.py`` on ``device`` (tiny settings with ``--device cpu``)."""
    import resnet_step
    import vit_step

    small = args.device == "cpu"
    runs = (
        (resnet_step, ["--width", "4", "--blocks", "1", "--batch-size", "8"] if small else ["--batch-size", "128"]),
        (vit_step, ["--depth", "1", "--batch-size", "8"] if small else ["--batch-size", "128"]),
    )
    for script, sizes in runs:
        say(f"\n# {script.__name__}.py on {device.platform}: tinyfn against JAX autodiff")
        with jax.default_device(device):
            script.main(["--no-torch", "--rounds", str(min(args.rounds, 3)), "--steps", "2" if small else "5", *sizes])
        sys.stdout.flush()


def header(args, device, note):
    """Versions, precision switches, the formulations measured and the time budget."""
    try:
        import torch

        tv = torch.__version__
        if device.platform == "gpu" and torch.cuda.is_available():
            tv += (
                f" (CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}; TF32 conv "
                f"{torch.backends.cudnn.allow_tf32}, matmul {torch.backends.cuda.matmul.allow_tf32})"
            )
    except ImportError:
        tv = "-"
    say(
        f"# {device.platform}: {device.device_kind}; python {platform.python_version()}, jax {jax.__version__}, numpy "
        f"{np.__version__}, torch {tv}"
    )
    say(
        "# jax default matmul precision: "
        f"{getattr(jax.config, 'jax_default_matmul_precision', None) or 'backend default'}; {os.cpu_count()} CPUs"
    )
    say(f"# {note}")
    say(
        f"# time budget {args.budget:.0f} s: the step tables take up to 60% of it (fewer rounds if short), later "
        "sections are skipped past it"
    )


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        device = jax.devices(args.device)[0]
    except RuntimeError as e:
        sys.exit(
            f"accelerator.py: --device {args.device}: no such device visible to jax ({e}); on a machine without a GPU "
            "use --device cpu"
        )
    forms, default_form, note = formulations(device.platform)
    header(args, device, note)

    results, notes = step_table(args, device, forms, default_form, start + 0.6 * args.budget)
    for n in dict.fromkeys(notes):
        say(f"# {n}")
    left = lambda: args.budget - (time.perf_counter() - start)  # noqa: E731
    for section, run in (
        ("mixed precision", lambda: precision_table(args, device, default_form)),
        ("correctness", lambda: correctness(args, device, forms)),
        ("fit epoch", lambda: fit_epoch(args, device)),
        ("resnet and vit steps", lambda: network_steps(args, device)),
    ):
        if left() <= 0:
            say(f"\n# {section} skipped: past the {args.budget:.0f} s budget")
            continue
        try:
            run()
        except Exception as e:  # noqa: BLE001 -- one broken section must not hide the others or the last line
            traceback.print_exc()
            say(f"# {section} failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    say(f"\n# total {time.perf_counter() - start:.0f} s")

    lenet = results.get(("lenet5", max(args.batch_sizes)), {})
    mine = lenet.get(f"tinyfn[{default_form}]")
    ratio = lambda peer: mine.median_ms() / lenet[peer].median_ms() if mine and peer in lenet else float("nan")  # noqa: E731
    say(f"{device.platform} tinyfn/jax-autodiff={ratio('jax_autodiff'):.3f} tinyfn/torch={ratio('torch_eager'):.3f}")


if __name__ == "__main__":
    main()
