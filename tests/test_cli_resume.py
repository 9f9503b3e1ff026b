"""A run directory is one run: ``--resume`` continues it with its own recipe, and a new run never replaces it."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tinyfn.cli import build_parser, main
from tinyfn.cli.runs import recipe_for

FIRST = "python -m tinyfn train --model lenet5 --seed 1 --out run"


@pytest.fixture
def cli(monkeypatch, capsys):
    """``main(argv)`` in this process: ``(exit status, stderr)``; the allocator left alone."""
    monkeypatch.setenv("TINYFN_MALLOPT", "0")

    def call(*argv):
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse's own errors
            status = exc.code
        return status, capsys.readouterr().err

    return call


def _recorded_run(out, data="embedded"):
    """A run directory as ``train`` leaves it, the checkpoint recording lenet5, seed 1, batch 64, 1 epoch, cosine."""
    from tinyfn.train import save_checkpoint

    recipe = dict(recipe_for(data, "lenet5"), data=data, seed=1, precision="fp32", batch_size=64, epochs=1)
    out.mkdir(parents=True)
    save_checkpoint(
        out / "checkpoint.safetensors", {"w": np.zeros(2, np.float32)}, metadata={"recipe": recipe, "command": FIRST}
    )
    (out / "command.txt").write_text(FIRST + "\n")
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _untouched(out, before):
    return {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(
    "flags, message",
    [  # the first two trained the remaining epochs at lr 0 (a cosine rebuilt for fewer steps than were taken)
        (["--batch-size", "128"], "--batch-size 128 contradicts the run's 64"),
        (
            ["--val-fraction", "0.5"],
            "--val-fraction 0.5 contradicts the run's 0.0833",
        ),  # and moved training images into validation
        (
            ["--epochs", "3"],
            "--epochs 3 contradicts the run's 1 .*its cosine learning-rate schedule spans its 1 epochs",
        ),
        (["--seed", "0"], "--seed 0 contradicts the run's 1"),
        (["--model", "wide_cnn"], "--model wide_cnn contradicts the run's lenet5"),
        (["--augment"], "--augment contradicts the run's --no-augment"),
        (["--precision", "bf16"], "--precision bf16 contradicts the run's fp32"),
        (["--resize-schedule", "16:1"], "--resize-schedule 16:1 contradicts the run's none"),
    ],
)
def test_resume_refuses_a_flag_that_contradicts_the_runs_recipe_and_touches_nothing(tmp_path, cli, flags, message):
    import re

    out = tmp_path / "run"
    before = _recorded_run(out)
    status, err = cli("train", "--out", str(out), "--resume", "--quiet", *flags)
    assert status == 2 and re.search(message, err), err
    assert len(err.strip().splitlines()) == 1 and str(out) in err
    assert _untouched(out, before)  # checkpoint and command.txt as they were


def test_resume_takes_the_whole_recipe_from_the_run(tmp_path):
    from tinyfn.cli.train import plan_run

    out = tmp_path / "run"
    _recorded_run(out)
    args = build_parser().parse_args(["train", "--out", str(out), "--resume", "--lr", "0.05"])  # agrees with the run
    recipe, where, prior = plan_run(args)
    assert where == out and prior["command"] == FIRST
    assert recipe == dict(
        recipe_for("embedded", "lenet5"), data="embedded", seed=1, precision="fp32", batch_size=64, epochs=1
    )


def test_resume_may_extend_the_epochs_of_a_constant_schedule_only(tmp_path):
    from tinyfn.cli.runs import resumed_recipe

    args = build_parser().parse_args(["train", "--resume", "--epochs", "5"])
    run = dict(recipe_for("embedded", "lenet5"), data="embedded", seed=1, precision="fp32", epochs=2)
    assert resumed_recipe(args, dict(run, schedule="constant"), "run")["epochs"] == 5
    for schedule in ("cosine", "step"):  # their total steps are part of the run
        with pytest.raises(
            ValueError, match=f"--epochs 5 contradicts the run's 2 .run.; its {schedule} learning-rate schedule"
        ):
            resumed_recipe(args, dict(run, schedule=schedule), "run")


def test_a_new_run_refuses_an_out_that_holds_a_run_and_touches_nothing(tmp_path, cli):
    out = tmp_path / "run"
    before = _recorded_run(out)
    status, err = cli(
        "train", "--out", str(out), "--seed", "5", "--quiet"
    )  # overwrote the run (seed 1 -> 5) without a word
    assert status == 2, err
    assert (
        f"--out {out} holds a run already (checkpoint.safetensors): add --resume to continue it, or choose another "
        "--out" in err
    )
    assert _untouched(out, before)


def test_resume_of_a_directory_without_a_run_says_so(tmp_path, cli):
    status, err = cli("train", "--out", str(tmp_path / "none"), "--resume")
    assert (
        status == 2 and f"--resume: there is no run to resume in {tmp_path / 'none'} (no checkpoint.safetensors)" in err
    )
    assert not (tmp_path / "none").exists()


def _train(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "tinyfn", "train", "--quiet", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow
def test_readme_resume_example_continues_the_same_run_and_appends_its_command(tmp_path):
    import jax

    from tinyfn.data import load_embedded, write_idx
    from tinyfn.train import load_checkpoint

    data = tmp_path / "idx"
    data.mkdir()
    for prefix, split, n in (("train", "train", 384), ("t10k", "test", 128)):
        ds = load_embedded(split)
        write_idx(data / f"{prefix}-images-idx3-ubyte", np.asarray(ds.images[:n]).reshape(n, 28, 28))
        write_idx(data / f"{prefix}-labels-idx1-ubyte", np.asarray(ds.labels[:n]).astype(np.uint8))
    flags = ["--data", str(data), "--model", "lenet5", "--batch-size", "64", "--seed", "1", "--schedule", "constant"]
    a, b = tmp_path / "a", tmp_path / "b"
    _train(*flags, "--epochs", "1", "--out", str(a))
    _train("--out", str(a), "--resume")  # README's second line, as written: the run is complete, nothing more to train
    _train("--out", str(a), "--resume", "--epochs", "2")  # a constant schedule may be extended
    _train(*flags, "--epochs", "2", "--out", str(b))  # the uninterrupted run
    resumed, straight = load_checkpoint(a / "checkpoint.safetensors"), load_checkpoint(b / "checkpoint.safetensors")
    for x, y in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    commands = (a / "command.txt").read_text().splitlines()
    assert len(commands) == 3 and commands[1].endswith(f"--out {a} --resume") and commands[2].endswith("--epochs 2")
    assert resumed.metadata["command"] == commands[0] and resumed.metadata["recipe"]["epochs"] == 2
    assert json.loads((a / "history.json").read_text())["epoch"] == [1, 2]


def test_an_older_runs_recipe_is_completed_from_beside_it_and_from_its_models_defaults():
    from tinyfn.cli.runs import run_recipe

    old = {"recipe": {"model": "wide_cnn", "epochs": 20, "batch_size": 128, "lr": 0.05}, "data": "embedded", "seed": 1}
    recipe = run_recipe(old, "runs/mine")  # written before the recipe held data, seed, precision, decay and tta
    assert recipe == dict(
        recipe_for("embedded", "wide_cnn"),
        keep_best="none",  # it kept no best epoch: resumed, its test set is evaluated with its last epoch as before
        data="embedded",
        seed=1,
        precision="fp32",
        epochs=20,
        batch_size=128,
        lr=0.05,
    )
    with pytest.raises(ValueError, match="--resume: runs/x records no recipe"):
        run_recipe({"history": {}}, "runs/x")


def test_the_default_recipe_keeps_the_best_validation_epoch_tests_it_and_logs_each_epoch(tmp_path, capsys):
    import csv

    from tinyfn.data import load_embedded, write_idx
    from tinyfn.train import BEST_NAME, load_checkpoint

    data, out = tmp_path / "idx", tmp_path / "run"
    data.mkdir()
    for prefix, split, n in (("train", "train", 384), ("t10k", "test", 128)):
        ds = load_embedded(split)
        write_idx(data / f"{prefix}-images-idx3-ubyte", np.asarray(ds.images[:n]).reshape(n, 28, 28))
        write_idx(data / f"{prefix}-labels-idx1-ubyte", np.asarray(ds.labels[:n]).astype(np.uint8))
    flags = ["--data", str(data), "--model", "lenet5", "--batch-size", "64", "--out", str(out), "--quiet"]
    assert main(["train", *flags, "--epochs", "3", "--lr", "0.2", "--schedule", "constant"]) == 0
    stdout = capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    best = int(np.argmin(history["eval_loss"])) + 1
    assert history["tested_epoch"] == best == history["best_epoch"][-1]
    assert (
        f"tested with the best validation epoch, {best} of 3 (val loss {history['eval_loss'][best - 1]:.4f}" in stdout
    )
    assert load_checkpoint(out / BEST_NAME).metadata["position"]["epoch"] == best
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["eval_loss"]) for r in rows] == history["eval_loss"]  # one row per epoch
    assert main(["evaluate", str(out / BEST_NAME)]) == 0  # the best epoch's checkpoint opens in evaluate
    assert f"test accuracy: {history['test_accuracy']:.4f}" in capsys.readouterr().out
    assert main(["evaluate", str(out)]) == 0  # the run directory: the checkpoint train tested, and says which
    evaluated = capsys.readouterr().out
    assert (
        evaluated.startswith(f"{out / BEST_NAME} on ") and f"test accuracy: {history['test_accuracy']:.4f}" in evaluated
    )
    assert main(["evaluate", str(out), "--last"]) == 0
    assert capsys.readouterr().out.startswith(f"{out / 'checkpoint.safetensors'} on ")


def test_a_resize_schedule_the_model_cannot_take_is_refused_before_anything_is_written(tmp_path, cli):
    out = tmp_path / "run"
    status, err = cli("train", "--model", "lenet5", "--epochs", "2", "--resize-schedule", "16:1", "--out", str(out))
    assert status == 2, err
    assert "--resize-schedule 16:1: --model lenet5 cannot take 16x16 images: its params at that size differ" in err
    assert not out.exists()  # refused from the shapes alone, before the run directory or its command
