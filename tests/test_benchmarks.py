"""Smoke tests: each benchmark script runs a few steps and prints what scripts parse."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_LAST = re.compile(r"tinyfn/jax-autodiff=(\d+\.\d+) tinyfn/torch=(\d+\.\d+|nan)")
ACCELERATOR_LAST = re.compile(r"cpu tinyfn/jax-autodiff=(\d+\.\d+) tinyfn/torch=(\d+\.\d+|nan)")
EPOCH_LAST = re.compile(r"epoch_s=(\S+) images_per_s=(\d+) outside=(-?\d+\.\d+) compile_s=(\S+) peak_mib=(\d+)")


def _run(script, *args):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


@pytest.mark.slow
def test_train_step_prints_every_implementation_and_a_parsable_last_line():
    lines = _run("train_step.py", "--quick")
    m = STEP_LAST.fullmatch(lines[-1])
    assert m, lines[-1]
    rows = {line.split("|")[1].strip() for line in lines if line.startswith("| ") and "---" not in line}
    for name in ("tinyfn (", "JAX lax", "numpy im2col", "tinyfn matrix"):
        assert any(row.startswith(name) for row in rows), (name, rows)
    try:
        import torch  # noqa: F401
    except ImportError:
        assert m.group(2) == "nan" and any("torch_eager skipped" in line for line in lines)
    else:
        assert any(row.startswith("PyTorch eager") for row in rows) and float(m.group(2)) > 0


@pytest.mark.slow
def test_epoch_reports_fit_time_outside_share_compile_and_memory():
    lines = _run("epoch.py", "--quick")
    m = EPOCH_LAST.fullmatch(lines[-1])
    assert m, lines[-1]
    assert float(m.group(1)) > 0 and int(m.group(2)) > 0 and float(m.group(4)) > 0 and int(m.group(5)) > 0


@pytest.mark.slow
def test_accelerator_check_runs_every_section_on_the_cpu_and_each_formulation_matches_the_default():
    import tinyfn.layers

    lines = _run("accelerator.py", "--device", "cpu")
    m = ACCELERATOR_LAST.fullmatch(lines[-1])
    assert m and float(m.group(1)) > 0, lines[-1]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines if line.startswith("| lenet5 |")]
    names = (
        getattr(tinyfn.layers, "FORMULATIONS", ("default",)) if hasattr(tinyfn.layers, "formulation") else ("default",)
    )
    for name in names:
        assert any(row[2].startswith(f"tinyfn [{name}") and float(row[3]) > 0 for row in rows), (name, rows)
    assert any(row[2].startswith("JAX lax.conv") and float(row[3]) > 0 for row in rows), rows
    # the same 10 steps under each formulation as under the CPU's default, within float32 tolerance
    checks = [line for line in lines if line.startswith("correctness ")]
    assert len(checks) == len(names) and all(line.endswith(": ok") for line in checks), checks
    assert any(line.startswith("epoch wall ") for line in lines), lines
    for net in ("resnet", "vit"):  # section 5: the networks' steps on the device, tinyfn against JAX autodiff
        ratio = [line for line in lines if line.startswith(f"{net} tinyfn/jax-autodiff=")]
        assert len(ratio) == 1 and float(ratio[0].split("=")[1].split()[0]) > 0, (net, lines[-40:])


def test_the_resnet_benchmark_recipe_is_the_command_lines():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from resnet_recipe import RESNET_RECIPE
    finally:
        sys.path.pop(0)
    from tinyfn.cli.runs import RECIPES

    cli = RECIPES["resnet"]
    pairs = [
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("learning_rate", "lr"),
        ("weight_decay", "weight_decay"),
        ("label_smoothing", "label_smoothing"),
        ("optimizer", "optimizer"),
        ("momentum", "momentum"),
        ("crop_padding", "crop_padding"),
        ("decay", "decay"),
        ("tta", "tta"),
        ("resize_schedule", "resize_schedule"),
    ]
    assert {a: RESNET_RECIPE[a] for a, _ in pairs} == {a: cli[b] for a, b in pairs}
    import inspect

    from tinyfn import models

    default = {
        k: v.default for k, v in inspect.signature(models.resnet).parameters.items()
    }  # the command line builds models.resnet()
    assert {k: RESNET_RECIPE[k] for k in ("width", "blocks_per_stage", "stages", "first_stride", "stem_stride")} == {
        k: default[k] for k in ("width", "blocks_per_stage", "stages", "first_stride", "stem_stride")
    }
    assert RESNET_RECIPE["augment"] == ("crop+flip" if cli["crop_padding"] else "flip") and cli["augment"]


@pytest.mark.slow
def test_resnet_recipe_trains_with_sgd_and_prints_a_parsable_last_line():
    lines = _run(
        "resnet_recipe.py",
        *("--epochs", "1", "--max-steps", "2", "--batch-size", "32", "--optimizer", "sgd", "--lr", "0.1"),
        *("--weight-decay", "5e-4", "--blocks", "1", "--stages", "2"),
    )
    m = re.fullmatch(
        r"epoch_s=(\S+) projected_epoch_s=(\S+) test_accuracy=(\d\.\d+) test_accuracy_tta=(\d\.\d+) total_s=(\d+)",
        lines[-1],
    )
    assert m, lines[-1]
    assert 0 < float(m[3]) <= 1 and 0 < float(m[4]) <= 1
    assert any(line.startswith("epoch 1:") for line in lines), lines


@pytest.mark.slow
def test_resnet_step_times_tinyfn_against_jax_autodiff_and_torch():
    lines = _run("resnet_step.py", "--steps", "1", "--rounds", "1", "--batch-size", "16")
    m = re.fullmatch(r"resnet tinyfn/jax-autodiff=(\d+\.\d+) tinyfn/torch=(\d+\.\d+|nan)", lines[-1])
    assert m, lines[-1]
    assert any(line.startswith("JAX autodiff") for line in lines)


def test_resnet_variants_counts_multiply_adds_by_hand():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from resnet_variants import multiply_adds, parse_variant
    finally:
        sys.path.pop(0)
    # width 4, blocks (1, 1, 2) on 28x28: the 4x4 stride-2 stem into 14x14 (16 taps, 1 -> 4 channels), one block of two
    # 3x3 convs 4 -> 4 at 14x14, a strided block 4 -> 8 at 7x7 with its 1x1 projection, then 8 -> 16 at 4x4 (strided,
    # projected) and one identity block 16 -> 16, the linear layer 16 -> 10
    by_hand = (
        196 * 4 * 16
        + 196 * 4 * (4 * 9 + 4 * 9)
        + 49 * 8 * (4 * 9 + 8 * 9 + 4)
        + 16 * 16 * (8 * 9 + 16 * 9 + 8)
        + 16 * 16 * (16 * 9 * 2)
        + 16 * 10
    )
    assert multiply_adds(4, (1, 1, 2)) == by_hand == 244_128
    assert multiply_adds(4, 2) == multiply_adds(4, (2, 2, 2)) > by_hand
    assert parse_variant("24:1,1,3") == (24, (1, 1, 3)) and parse_variant("20:2") == (20, 2)


@pytest.mark.slow
def test_resnet_variants_times_each_shape_and_prints_a_parsable_last_line():
    lines = _run("resnet_variants.py", "4:2", "4:1,1,2", "--batch-size", "8", "--steps", "1", "--rounds", "1")
    m = re.fullmatch(r"variants 4:2=(\d+\.\d+) 4:1,1,2=(\d+\.\d+)", lines[-1])
    assert m and all(float(v) > 0 for v in m.groups()), lines[-1]
    assert any(line.startswith("4:1,1,2") and "params" in line for line in lines), lines


@pytest.mark.slow
def test_vit_step_runs_every_implementation_and_prints_a_parsable_last_line():
    lines = _run("vit_step.py", "--quick")
    m = re.fullmatch(r"vit " + STEP_LAST.pattern, lines[-1])
    assert m and float(m.group(1)) > 0, lines[-1]
    assert lines[0].startswith("first two losses, every implementation")  # the implementations agreed on two steps


def _benchmark_module(name):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_train_step_stops_when_an_implementation_computes_another_first_step():
    same_step = _benchmark_module("train_step").same_step
    losses = {"tinyfn": [2.3562, 2.1857], "jax_autodiff": [2.3563, 2.1856], "torch_channels_last": [2.3562, 2.1857]}
    assert same_step(losses) == [2.3562, 2.1857]  # within 2e-3: the reference's, tinyfn's
    with pytest.raises(SystemExit, match="torch_channels_last computes another step"):
        same_step(dict(losses, torch_channels_last=[2.3562, 2.1957]))  # its second step differs by 0.01


@pytest.mark.slow
def test_train_step_times_pytorch_channels_last_and_compares_tinyfn_with_the_faster_layout():
    pytest.importorskip("torch")
    lines = _run("train_step.py", "--quick", "--only", "tinyfn", "jax_autodiff", "torch_eager", "torch_channels_last")
    m = STEP_LAST.fullmatch(lines[-1])
    assert m, lines[-1]
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "---" not in line}
    assert "PyTorch eager, NCHW" in rows and "PyTorch eager, channels-last" in rows, rows
    layouts = re.fullmatch(r"tinyfn/torch-nchw=(\d+\.\d+) tinyfn/torch-channels-last=(\d+\.\d+)", lines[-2])
    assert layouts, lines[-2]
    assert m.group(2) == max(layouts.groups(), key=float)  # tinyfn's median over the faster layout's
    assert any(line.startswith("# first losses, every implementation: ") for line in lines), lines


def _train_step_output(capsys):
    """What train_step.py prints for made-up timings: LeNet-5's first linear layer alone, batch 32, peak 0.2."""
    from types import SimpleNamespace

    import numpy as np

    train_step = _benchmark_module("train_step")
    args = SimpleNamespace(model="lenet5", batch_size=32, rounds=1, steps=3, tune_allocator=True)
    specs = [("Linear", {}, {"w": np.zeros((784, 10)), "b": np.zeros(10)}, (None, 784), (None, 10))]
    results = {
        "tinyfn": (1.0, [0.010, 0.011, 0.012], 0.0),
        "jax_autodiff": (1.0, [0.020] * 3, 0.0),
        "torch_eager": (0.5, [0.0125] * 3, 0.0),
        "torch_channels_last": (0.5, [0.0110] * 3, 0.0),
    }
    device = SimpleNamespace(platform="cpu", device_kind="cpu")
    train_step.report(args, specs, results, [], 0.2, device)
    flops = 2 * 2 * 784 * 10 * 32  # one linear layer on the data: forward and weight gradient
    return capsys.readouterr().out, 100 * flops / 0.011 / 1e9 / 0.2


RESNET_STEP_OUTPUT = """\
first two losses, every implementation: 2.4812, 2.3080 (within 2e-3)
resnet(width=24, blocks_per_stage=(1, 1, 3), first_stride=1, stem_stride=2) batch 128, 10 rounds x 10 steps, 2 cores, \
jax 0.10.2
implementation                                    median ms   min ms  images/s  x tinyfn
tinyfn (handwritten rules, jit)                        83.1     79.0      1540      1.00
JAX autodiff (lax.conv, jax.grad, jit)                129.0    120.0       992      1.55
PyTorch 2.13.0+cpu eager, NCHW                         91.2     88.0      1404      1.10
PyTorch 2.13.0+cpu eager, channels-last                74.5     70.1      1718      0.90
resnet tinyfn/jax-autodiff=0.644 tinyfn/torch=1.115
"""


def test_batch_sizes_reads_each_scripts_table_and_last_line(capsys):
    batch_sizes = _benchmark_module("batch_sizes")
    text, peak = _train_step_output(capsys)  # train_step.py's own report, so a format change there fails here
    got = batch_sizes.parse_train_step(text)
    ms = {"tinyfn": 11.0, "jax_autodiff": 20.0, "torch_nchw": 12.5, "torch_channels_last": 11.0}
    assert got["ms"] == ms and (got["jax"], got["torch"]) == (0.55, 1.0), got
    assert got["peak"] == round(peak), (got["peak"], peak)
    got = batch_sizes.parse_resnet_step(RESNET_STEP_OUTPUT)
    ms = {"tinyfn": 83.1, "jax_autodiff": 129.0, "torch_nchw": 91.2, "torch_channels_last": 74.5}
    assert got == {"ms": ms, "jax": 0.644, "torch": 1.115, "peak": None}, got
    with pytest.raises(ValueError, match="last line"):
        batch_sizes.parse_resnet_step(RESNET_STEP_OUTPUT.rsplit("resnet ", 1)[0])
    row = batch_sizes.format_row({"model": "wide", "batch": 512, "error": "failed (rc=137)"})
    assert row.count("|") == batch_sizes.HEADER.count("|") and "failed (rc=137)" in row
    # every command line it builds is one its script accepts, with --rounds and --steps passed through
    args = batch_sizes.parse_args(["--rounds", "2", "--steps", "3"])
    for model, script in (("wide", "train_step"), ("resnet", "resnet_step")):
        cmd = batch_sizes.command(model, 512, args)
        parsed = _benchmark_module(script).parse_args(cmd[2:])
        assert (parsed.batch_size, parsed.rounds, parsed.steps) == (512, 2, 3), (model, cmd)


@pytest.mark.slow
def test_batch_sizes_quick_prints_a_row_per_run_and_a_parsable_last_line():
    lines = _run("batch_sizes.py", "--quick")
    assert lines[-1] == "batch_sizes rows=1 failed=0", lines
    row = [cell.strip() for cell in next(line for line in lines if line.startswith("| lenet5 | 32 |")).split("|")[1:-1]]
    assert float(row[2]) > 0 and float(row[3]) > 0 and float(row[6]) > 0, row  # tinyfn, JAX autodiff, their ratio


@pytest.mark.slow
def test_train_memory_measures_each_training_process_and_prints_a_parsable_last_line():
    lines = _run("train_memory.py", "--data", "builtin", "--steps", "3")
    m = re.fullmatch(r"train_memory tinyfn_mib=(\d+\.\d) torch_mib=(\d+\.\d|nan) ratio=(\d+\.\d+|nan)", lines[-1])
    assert m and float(m.group(1)) > 0, lines[-1]
    assert any(line.startswith("| tinyfn: models.resnet()") for line in lines), lines
    try:
        import torch  # noqa: F401
    except ImportError:
        assert m.group(2) == "nan" and any("PyTorch rows skipped" in line for line in lines)
    else:
        assert float(m.group(2)) > 0 and float(m.group(3)) > 0, lines[-1]
        assert any(line.startswith("| PyTorch: the same net") for line in lines), lines


@pytest.mark.parametrize("model", ["lenet5", "wide_cnn"])
def test_profile_step_lists_pytorchs_channels_last_operators_for_each_small_cnn(model, capsys):
    pytest.importorskip("torch")
    profile_step = _benchmark_module("profile_step")
    from tinyfn import models

    args = profile_step.parse_args(["--model", model, "--batch-size", "4", "--reps", "2"])
    profile_step.torch_profile(args, models.get_model(model))
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("PyTorch "))
    assert "eager, channels-last" in header, header
    assert ("without its dropout" in header) == (model == "wide_cnn"), header  # the wide CNN's dropout is left out
    ops = {line.split()[0] for line in lines if line.startswith("  ")}
    assert {"aten::mkldnn_convolution", "aten::convolution_backward"} <= ops, ops
