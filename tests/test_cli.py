"""The command line end to end: train, evaluate, visualize (slow: real training on the embedded data)."""

import json
import subprocess
import sys

import pytest


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tinyfn", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "lenet"
    proc = _run("train", "--epochs", "2", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


@pytest.mark.slow
def test_train_writes_a_run_directory_and_reports_test_accuracy(run_dir):
    out, stdout = run_dir
    assert {"checkpoint.safetensors", "history.json", "curves.png", "confusion.png", "command.txt"} <= {p.name for p in out.iterdir()}
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ")
    acc = float(last.split(": ")[1])
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2] and acc == pytest.approx(history["eval_accuracy"][-1], abs=1e-4)
    assert acc > 0.75  # two epochs of LeNet-5 on 8,000 images; chance is 0.1
    assert "--epochs 2" in (out / "command.txt").read_text()


@pytest.mark.slow
def test_evaluate_prints_loss_accuracy_and_per_class_accuracy(run_dir):
    out, stdout = run_dir
    proc = _run("evaluate", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy: " + stdout.strip().splitlines()[-1].split(": ")[1] in proc.stdout
    assert proc.stdout.count("(200 images)") == 10 and "Ankle boot" in proc.stdout


def test_evaluate_refuses_a_missing_checkpoint(tmp_path):
    proc = _run("evaluate", str(tmp_path))
    assert proc.returncode == 2 and "no checkpoint at" in proc.stderr


@pytest.mark.slow
def test_visualize_writes_the_figures_of_a_trained_run(run_dir, tmp_path):
    import matplotlib.image

    out, _ = run_dir
    proc = _run("visualize", str(out), "--layer", "conv2", "--channels", "0", "3", "--k", "4", "--images", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    written = [line for line in proc.stdout.splitlines() if line.endswith(".png")]
    names = sorted(p.rsplit("/", 1)[1] for p in written)
    assert names == ["comparison.png", "deconv_conv2.png", "feature_maps_conv2.png", "filters_conv1.png"]
    for path in written:
        pic = matplotlib.image.imread(path)
        assert pic.shape[0] > 150 and pic.shape[1] > 300 and pic[..., :3].var() > 1e-3


@pytest.mark.slow
def test_visualize_reports_bad_layers_and_channels(run_dir):
    out, _ = run_dir
    proc = _run("visualize", str(out), "--layer", "conv7")
    assert proc.returncode == 2 and "layer 'conv7' does not exist" in proc.stderr
    proc = _run("visualize", str(out), "--layer", "conv1", "--channels", "6")
    assert proc.returncode == 2 and "channel 6 is out of range for layer 'conv1' with 6 channels" in proc.stderr


def test_visualize_refuses_a_checkpoint_that_does_not_match_its_model(tmp_path):
    import jax

    from tinyfn import models
    from tinyfn.train import save_checkpoint

    _, params = models.lenet5().init(jax.random.key(0), (None, 1, 28, 28))
    save_checkpoint(tmp_path / "checkpoint.safetensors", params, metadata={"model": {"name": "wide_cnn", "kwargs": {}}})
    proc = _run("visualize", str(tmp_path))
    assert proc.returncode == 2 and "has shape" in proc.stderr and "expected" in proc.stderr
