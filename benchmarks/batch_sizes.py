"""tinyfn's training step against JAX autodiff and PyTorch (NCHW and channels-last) at several batch sizes.

    python benchmarks/batch_sizes.py [--models lenet5 wide resnet] [--batch-sizes 32 128 512] [--rounds R]
        [--steps S] [--quick]

Runs, one after another and each in its own process, ``train_step.py --model
lenet5`` and ``train_step.py --model wide`` (SGD; only tinyfn, JAX autodiff and
PyTorch's two layouts, the matmul peak measured for the wide CNN only) and
``resnet_step.py`` (the recipe's ResNet, AdamW) at each ``--batch-size``, with
``--rounds`` and ``--steps`` passed through when given (else each script's own
defaults). From each run's table it reads the median ms/step of tinyfn, JAX
autodiff, PyTorch NCHW and PyTorch channels-last, and from its last line the
ratios ``tinyfn/jax-autodiff`` and ``tinyfn/torch`` (against PyTorch's faster
layout); for the wide CNN, tinyfn's share of the measured float32 matmul peak.
It prints one markdown table; a run that fails is a row that says so (with its
return code). ``--quick``: LeNet-5 at batch 32 with ``train_step.py --quick``'s
settings, the smoke test. The last line, for scripts, is

    batch_sizes rows=N failed=F
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {
    "lenet5": ("train_step.py", "--model", "lenet5"),
    "wide": ("train_step.py", "--model", "wide"),
    "resnet": ("resnet_step.py",),
}
COLUMNS = ("tinyfn", "jax_autodiff", "torch_nchw", "torch_channels_last")
# the rows each script prints, by column: train_step.py's LABELS and resnet_step.py's names (PyTorch's with its version)
TRAIN_STEP_ROWS = {
    "tinyfn": re.compile(r"tinyfn \(handwritten VJPs, jit\)"),
    "jax_autodiff": re.compile(r"JAX lax\.conv \+ reduce_window \+ grad, jit"),
    "torch_nchw": re.compile(r"PyTorch eager, NCHW"),
    "torch_channels_last": re.compile(r"PyTorch eager, channels-last"),
}
RESNET_STEP_ROWS = {
    "tinyfn": re.compile(r"tinyfn \(handwritten rules, jit\)"),
    "jax_autodiff": re.compile(r"JAX autodiff \(lax\.conv, jax\.grad, jit\)"),
    "torch_nchw": re.compile(r"PyTorch \S+ eager, NCHW"),
    "torch_channels_last": re.compile(r"PyTorch \S+ eager, channels-last"),
}
RESNET_ROW = re.compile(r"(?P<name>.+?)\s+(?P<median>\d+\.\d)\s+\d+\.\d\s+\d+\s+\d+\.\d\d")
LAST_LINE = re.compile(r"(?:resnet )?tinyfn/jax-autodiff=(?P<jax>\S+) tinyfn/torch=(?P<torch>\S+)")
TRAIN_STEP_IMPLS = ("tinyfn", "jax_autodiff", "torch_eager", "torch_channels_last")
QUICK = ("--steps", "2", "--rounds", "2", "--warmup", "1", "--no-peak", "--pause", "0")  # train_step.py --quick's


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=tuple(SCRIPTS), help="default: lenet5 wide resnet")
    ap.add_argument("--batch-sizes", nargs="+", type=int, help="default: 32 128 512")
    ap.add_argument("--rounds", type=int, help="passed to every script (default: each script's own)")
    ap.add_argument("--steps", type=int, help="passed to every script (default: each script's own)")
    ap.add_argument("--quick", action="store_true", help="smoke test: lenet5 at batch 32, train_step.py --quick")
    args = ap.parse_args(argv)
    quick = args.quick
    args.models = args.models or (["lenet5"] if quick else list(SCRIPTS))
    args.batch_sizes = args.batch_sizes or ([32] if quick else [32, 128, 512])
    for flag in ("batch_sizes", "rounds", "steps"):
        value = getattr(args, flag)
        if value is not None and min(value if isinstance(value, list) else [value]) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
    return args


def command(model, batch, args):
    """The command line of one run: ``model``'s script at ``batch``, with the settings passed through."""
    script, *flags = SCRIPTS[model]
    cmd = [sys.executable, os.path.join(HERE, script), *flags, "--batch-size", str(batch)]
    if script == "train_step.py":
        cmd += ["--only", *TRAIN_STEP_IMPLS]
        cmd += list(QUICK) if args.quick else ([] if model == "wide" else ["--no-peak"])
    elif args.quick:
        cmd += ["--steps", "1", "--rounds", "1"]
    for flag in ("rounds", "steps"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag}", str(getattr(args, flag))]
    return cmd


def _last_ratios(lines):
    m = LAST_LINE.fullmatch(lines[-1].strip()) if lines else None
    if not m:
        raise ValueError(f"no ratios in the last line {lines[-1] if lines else ''!r}")
    return float(m["jax"]), float(m["torch"])


def parse_train_step(text):
    """``{"ms": {column: median ms/step}, "jax": R1, "torch": R2, "peak": tinyfn's % of the matmul peak or None}``
    from ``train_step.py``'s output (its markdown table, then its last line)."""
    lines = text.strip().splitlines()
    head = next((line for line in lines if line.startswith("| implementation")), None)
    if head is None:
        raise ValueError("no table header '| implementation ...'")
    names = [c.strip() for c in head.strip().strip("|").split("|")]
    median, peak = names.index("ms/step median"), names.index("% peak") if "% peak" in names else None
    ms, tinyfn_peak = {}, None
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) != len(names):
            continue
        for column, pattern in TRAIN_STEP_ROWS.items():
            if pattern.fullmatch(cells[0]):
                ms[column] = float(cells[median])
                if column == "tinyfn" and peak is not None:
                    tinyfn_peak = float(cells[peak].rstrip("%"))
    jax_ratio, torch_ratio = _last_ratios(lines)
    return {"ms": ms, "jax": jax_ratio, "torch": torch_ratio, "peak": tinyfn_peak}


def parse_resnet_step(text):
    """The same as ``parse_train_step`` from ``resnet_step.py``'s output (its fixed-width table); no peak."""
    lines = text.strip().splitlines()
    ms = {}
    for line in lines:
        m = RESNET_ROW.fullmatch(line.strip())
        for column, pattern in RESNET_STEP_ROWS.items():
            if m and pattern.fullmatch(m["name"]):
                ms[column] = float(m["median"])
    if "tinyfn" not in ms:
        raise ValueError("no row 'tinyfn (handwritten rules, jit)'")
    jax_ratio, torch_ratio = _last_ratios(lines)
    return {"ms": ms, "jax": jax_ratio, "torch": torch_ratio, "peak": None}


def run_one(model, batch, args):
    """One run as a row: ``{"model", "batch", and the parsed numbers or "error"}``."""
    cmd = command(model, batch, args)
    print(f"# running: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE))
    row = {"model": model, "batch": batch}
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [""])[-1][:120]
        return dict(row, error=f"failed (rc={proc.returncode}){': ' + why if why else ''}")
    parse = parse_resnet_step if SCRIPTS[model][0] == "resnet_step.py" else parse_train_step
    try:
        return dict(row, **parse(proc.stdout))
    except ValueError as exc:
        return dict(row, error=f"unparsable output ({exc})")


HEADER = (
    "| model | batch | tinyfn ms | JAX autodiff ms | PyTorch NCHW ms | PyTorch channels-last ms | tinyfn/jax-autodiff "
    "| tinyfn/torch (faster layout) | tinyfn % of matmul peak |"
)


def format_row(row):
    """One markdown row: the medians and ratios, or the error across the row."""
    if "error" in row:
        return f"| {row['model']} | {row['batch']} | {row['error'].replace('|', '/')} |" + " – |" * 6
    ms = [f"{row['ms'][c]:.2f}" if c in row["ms"] else "–" for c in COLUMNS]
    peak = f"{row['peak']:.0f}%" if row["peak"] is not None else "–"
    return f"| {row['model']} | {row['batch']} | {' | '.join(ms)} | {row['jax']:.3f} | {row['torch']:.3f} | {peak} |"


def main(argv=None):
    args = parse_args(argv)
    print(HEADER)
    print("|" + "---|" * HEADER.count(" |"))
    failed = n = 0
    for model in args.models:
        for batch in args.batch_sizes:
            row = run_one(model, batch, args)
            print(format_row(row), flush=True)
            failed, n = failed + ("error" in row), n + 1
    print(f"batch_sizes rows={n} failed={failed}")


if __name__ == "__main__":
    main()
