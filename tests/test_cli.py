"""The command line end to end: train, evaluate, visualize (slow: real training on the embedded data)."""

import json
import subprocess
import sys

import jax
import numpy as np
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
    assert {"checkpoint.safetensors", "history.json", "curves.png", "confusion.png", "command.txt"} <= {
        p.name for p in out.iterdir()
    }
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ")
    acc = float(last.split(": ")[1])
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2] and acc == pytest.approx(history["test_accuracy"], abs=1e-4)
    assert (
        history["validation"]["images"] == 667 and history["validation"]["train_images"] == 7333
    )  # 5,000/60,000 of 8,000
    assert len(history["eval_accuracy"]) == 2 and history["eval_accuracy"][-1] != history["test_accuracy"]
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
    proc = _run(
        "visualize",
        str(out),
        "--layer",
        "conv2",
        "--channels",
        "0",
        "3",
        "--k",
        "4",
        "--images",
        "2",
        "--out",
        str(tmp_path),
    )
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


def test_the_validation_split_holds_out_the_full_datas_share_and_is_disjoint():
    from tinyfn.cli.runs import VAL_FRACTION, validation_split

    for n, expected in ((60_000, 5_000), (8_000, 667)):
        train, val = validation_split(n, VAL_FRACTION, seed=0)
        assert len(val) == expected and len(train) == n - expected
        assert not set(train.tolist()) & set(val.tolist()) and len(set(train.tolist()) | set(val.tolist())) == n
    a, b = validation_split(8_000, VAL_FRACTION, seed=0)[1], validation_split(8_000, VAL_FRACTION, seed=1)[1]
    assert not np.array_equal(a, b)
    assert len(validation_split(100, 0.0, seed=0)[1]) == 0


def test_crop_padding_zero_augments_with_flips_only_and_the_recipe_checks_it():
    from tinyfn.cli.runs import check_recipe, make_augment, recipe_for

    x = np.arange(8 * 1 * 5 * 5, dtype=np.float32).reshape(8, 1, 5, 5)  # no image equals a shift or mirror of itself
    recipe = dict(recipe_for("embedded", None), augment=True)

    def outcomes(crop_padding):
        out = np.asarray(make_augment(dict(recipe, crop_padding=crop_padding), x.shape[1:])(jax.random.key(3), x))
        return [
            ("same" if np.array_equal(o, i) else "flipped" if np.array_equal(o, i[..., ::-1]) else "moved")
            for o, i in zip(out, x)
        ]

    assert set(outcomes(0)) == {"same", "flipped"}
    assert "moved" in outcomes(2)
    # the crops pad with black in the data's units: (0 - mean) / std, not 0 (the mean grey of normalised data)
    padded = np.asarray(
        make_augment(dict(recipe, crop_padding=2), x.shape[1:], normalization=(0.5, 0.25))(jax.random.key(3), x + 1)
    )
    assert set(np.unique(padded)) - set(np.unique(x + 1)) == {-2.0}
    with pytest.raises(ValueError, match=r"--tta must be one of none, flip, got 'mirror'"):
        check_recipe(dict(recipe, tta="mirror"), None)
    with pytest.raises(ValueError, match=r"--crop-padding must be a non-negative integer, got -1"):
        check_recipe(dict(recipe, crop_padding=-1), None)
    with pytest.raises(ValueError, match=r"--label-smoothing must be in \[0, 1\), got 1.5"):
        check_recipe(dict(recipe, label_smoothing=1.5), None)
    with pytest.raises(ValueError, match=r"--val-fraction must be in \[0, 1\), got 1.0"):
        check_recipe(dict(recipe, val_fraction=1.0), None)


def test_resize_schedule_scales_each_stages_images_after_its_crops_and_flips_and_the_recipe_checks_it():
    from tinyfn.cli.runs import check_recipe, make_augment, recipe_for, resize_stages
    from tinyfn.train.augment import EpochSchedule

    assert resize_stages("16:5,22:4") == ((16, 5), (22, 4)) and resize_stages("none") == ()
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    recipe = dict(recipe_for("embedded", "resnet"), resize_schedule="16:2,22:1")
    schedule = make_augment(recipe, x.shape[1:])
    assert isinstance(schedule, EpochSchedule) and schedule.starts == (0, 2, 3)
    key = jax.random.key(3)
    plain = make_augment(dict(recipe, resize_schedule="none"), x.shape[1:])  # the recipe's crops and flips
    for epoch, size in ((0, 16), (1, 16), (2, 22)):
        expected = jax.image.resize(plain(jax.random.split(key)[0], x), (4, 1, size, size), "linear")
        np.testing.assert_allclose(schedule.at(epoch)(key, x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(schedule.at(3)(key, x), plain(key, x))  # the last stage: full size
    unaugmented = make_augment(dict(recipe, augment=False), x.shape[1:])
    assert unaugmented.at(3) is None and unaugmented.at(0)(key, x).shape == (4, 1, 16, 16)
    assert make_augment(dict(recipe, augment=False, resize_schedule="none"), x.shape[1:]) is None
    with pytest.raises(ValueError, match=r"--resize-schedule 16:10,22:5 spans 15 epochs of the run's 15: at least"):
        check_recipe(dict(recipe, resize_schedule="16:10,22:5"), None)
    for bad in ("16", "16:0", "a:3", "16:3,"):
        with pytest.raises(ValueError, match=rf"--resize-schedule must be SIZE:EPOCHS pairs .* got '{bad}'"):
            check_recipe(dict(recipe, resize_schedule=bad), None)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_decay_weights_leaves_batch_norm_and_biases_undecayed(optimizer):
    import jax.numpy as jnp

    from tinyfn.cli.runs import check_recipe, make_optimizer, recipe_for

    params = {"w": jnp.ones((2, 3)), "gamma": jnp.ones(3)}
    zero = {"w": jnp.zeros((2, 3)), "gamma": jnp.zeros(3)}  # no gradient: only the decay moves a parameter
    moved = {}
    for decay in ("all", "weights"):
        opt = make_optimizer(
            dict(recipe_for("fashion-mnist", "resnet"), optimizer=optimizer, schedule="constant", decay=decay), 10
        )
        updates, _ = opt.update(zero, opt.init(params), params)
        moved[decay] = {k: bool(np.any(np.asarray(u) != 0)) for k, u in updates.items()}
    assert moved == {"all": {"w": True, "gamma": True}, "weights": {"w": True, "gamma": False}}
    with pytest.raises(ValueError, match=r"--decay must be one of all, weights, got 'bias'"):
        check_recipe(dict(recipe_for("embedded", None), decay="bias"), None)


def test_curves_are_titled_with_the_short_data_name_and_one_epoch_gets_a_sane_axis():
    from tinyfn.cli.runs import data_name
    from tinyfn.train import plot_history

    assert data_name("/usr/share/datasets/fashion-mnist/") == "fashion-mnist" and data_name("embedded") == "embedded"
    assert data_name("/home/me/data/mnist") == "mnist"
    fig = plot_history(
        {"epoch": [1], "train_loss": [0.5], "train_accuracy": [0.8], "eval_loss": [0.6], "eval_accuracy": [0.7]},
        title="lenet5 on mnist",
    )
    for ax in fig.axes:
        assert ax.get_xlim() == (0.5, 1.5)
        assert [t for t in ax.get_xticks() if 0.5 <= t <= 1.5] == [1.0]
    assert fig.axes[0].get_title() == "lenet5 on mnist: loss"


# --- the flags, on a tiny IDX directory (384 training / 128 test images) ------------------------------------


@pytest.fixture(scope="module")
def tiny_idx(tmp_path_factory):
    from tinyfn.data import load_embedded, write_idx

    d = tmp_path_factory.mktemp("tiny-idx")
    for prefix, split, n in (("train", "train", 384), ("t10k", "test", 128)):
        ds = load_embedded(split)
        write_idx(d / f"{prefix}-images-idx3-ubyte", np.asarray(ds.images[:n]).reshape(n, 28, 28))
        write_idx(d / f"{prefix}-labels-idx1-ubyte", np.asarray(ds.labels[:n]).astype(np.uint8))
    return d


def _train_tiny(tiny_idx, out, *flags):
    proc = _run(
        "train",
        "--data",
        str(tiny_idx),
        "--model",
        "lenet5",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--quiet",
        "--out",
        str(out),
        *flags,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("test accuracy: ")
    from tinyfn.train import load_checkpoint

    return load_checkpoint(out / "checkpoint.safetensors")


@pytest.fixture(scope="module")
def plain_tiny(tiny_idx, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    return out, _train_tiny(tiny_idx, out)


def _differs(a, b):
    import jax

    return any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_train_records_the_architecture_and_summary_prints_it(plain_tiny):
    out, ckpt = plain_tiny
    record = ckpt.metadata["model"]
    assert record["spec"]["name"] == "serial" and record["spec"]["children"][0]["name"] == "Conv2D"
    assert record["input_shape"] == [1, 28, 28] and ckpt.metadata["recipe"]["optimizer"] == "sgd"
    assert type(ckpt.opt_state).__name__ == "SGDState"
    proc = _run("summary", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Total params: 61,706" in proc.stdout and "Conv2D(out_channels=6" in proc.stdout  # LeNet-5's known count


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, state", [("adam", "AdamState"), ("adamw", "AdamState")])
def test_optimizer_flag_trains_with_that_optimizer(tiny_idx, plain_tiny, tmp_path, optimizer, state):
    ckpt = _train_tiny(tiny_idx, tmp_path / "run", "--optimizer", optimizer, "--lr", "1e-3")
    assert ckpt.metadata["recipe"]["optimizer"] == optimizer and type(ckpt.opt_state).__name__ == state
    assert _differs(ckpt.params, plain_tiny[1].params)


@pytest.mark.slow
def test_precision_bf16_builds_the_model_computing_in_bfloat16(tiny_idx, tmp_path):
    ckpt = _train_tiny(tiny_idx, tmp_path / "run", "--precision", "bf16")
    convs = [c for c in ckpt.metadata["model"]["spec"]["children"] if c["name"] in ("Conv2D", "Linear")]
    assert convs and all(c["config"]["compute_dtype"] == {"dtype": "bfloat16"} for c in convs)
    assert all(
        np.asarray(a).dtype == np.float32 for a in __import__("jax").tree.leaves(ckpt.params)
    )  # params stay float32
    proc = _run("evaluate", str(tmp_path / "run"))  # rebuilt from the record, in bf16 again
    assert proc.returncode == 0 and "test accuracy: " in proc.stdout, proc.stderr


def test_precision_bf16_builds_the_resnet_and_is_refused_for_a_model_without_compute_dtype(monkeypatch):
    from tinyfn import models
    from tinyfn.cli.train import build_model
    from tinyfn.layers import to_spec

    def layers(node):
        yield node
        for child in node.get("children", ()):
            yield from layers(child)

    spec = to_spec(build_model({"model": "resnet", "precision": "bf16"}, 10))  # before: refused (batch norm)
    names = [n["name"] for n in layers(spec)]
    products = [n for n in layers(spec) if n["name"] in ("Conv2D", "Linear")]
    assert (
        "BatchNorm2D" in names and names[-1] == "Float32" and len(products) == 14
    )  # stem, 5 blocks of 2, 2 projections; linear
    assert all(n["config"]["compute_dtype"] == {"dtype": "bfloat16"} for n in products)
    monkeypatch.setitem(models.MODELS, "plain", lambda num_classes=10: models.lenet5(num_classes))
    with pytest.raises(
        ValueError, match="--precision bf16: get_model: model 'plain' takes no argument 'compute_dtype'"
    ):
        build_model({"model": "plain", "precision": "bf16"}, 10)


@pytest.mark.slow
def test_formulation_flag_is_recorded_and_trains_to_the_same_result(tiny_idx, plain_tiny, tmp_path):
    ckpt = _train_tiny(tiny_idx, tmp_path / "run", "--formulation", "xla")
    assert ckpt.metadata["formulation"] == "xla"
    import jax

    for a, b in zip(
        jax.tree.leaves(ckpt.params), jax.tree.leaves(plain_tiny[1].params)
    ):  # another evaluation of the same rules
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-4)


@pytest.mark.slow
def test_augment_flag_trains_on_augmented_batches(tiny_idx, plain_tiny, tmp_path):
    ckpt = _train_tiny(tiny_idx, tmp_path / "run", "--augment")
    assert ckpt.metadata["recipe"]["augment"] is True
    assert _differs(ckpt.params, plain_tiny[1].params)


@pytest.mark.slow
def test_resnet_recipe_trains_evaluates_summarises_and_visualizes(tiny_idx, tmp_path):
    out = tmp_path / "resnet"
    proc = _run(
        "train",
        "--data",
        str(tiny_idx),
        "--model",
        "resnet",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--quiet",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from tinyfn.train import load_checkpoint

    ckpt = load_checkpoint(out / "checkpoint.safetensors")
    assert ckpt.metadata["recipe"]["optimizer"] == "adamw" and ckpt.metadata["recipe"]["augment"] is True
    assert ckpt.model_state is not None and ckpt.model_state[1]["mean"].shape == (24,)  # the stem's batch norm
    last = proc.stdout.strip().splitlines()[-1]
    assert last.endswith(" (test-time views: flip)"), (
        last
    )  # the recipe evaluates the test set on each image and its mirror
    test_acc = float(last.split(": ")[1].split()[0])
    history = json.loads((out / "history.json").read_text())
    assert history["tta"] == "flip" and history["test_accuracy"] == pytest.approx(test_acc, abs=5e-5)
    from tinyfn import data as D

    assert history["validation"]["images"] == 0 and history["validation"]["train_images"] == len(
        D.load_dataset(str(tiny_idx), "train")
    )  # resnet trains on all
    proc = _run("evaluate", str(out))  # the run's own test-time views
    assert (
        proc.returncode == 0
        and f"test accuracy: {test_acc:.4f}" in proc.stdout
        and "test-time views: flip" in proc.stdout
    ), proc.stderr  # the state came back
    assert f"test accuracy, single view: {history['test_accuracy_single_view']:.4f}" in proc.stdout, proc.stdout
    proc = _run("evaluate", str(out), "--tta", "none")
    assert proc.returncode == 0 and f"test accuracy: {history['test_accuracy_single_view']:.4f}" in proc.stdout, (
        proc.stdout
    )
    proc = _run("summary", str(out))
    n_params = sum(
        int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(ckpt.params)
    )  # counted from the file itself
    assert f"Total params: {n_params:,}" in proc.stdout and "BatchNorm2D" in proc.stdout
    proc = _run("visualize", str(out), "--k", "2", "--images", "2")
    assert proc.returncode == 0, proc.stderr
    assert (out / "visualize" / "feature_maps_conv1.png").is_file() and (
        out / "visualize" / "deconv_conv1.png"
    ).is_file()
    assert (out / "visualize" / "comparison.png").is_file() and "cannot project" not in proc.stderr  # through bn
    assert (out / "visualize" / "deconv_block5.residual1.png").is_file()  # the last residual block


# --- flags out of range: one line naming the flag, its value and what was expected, argparse's exit status 2 ----------


@pytest.mark.parametrize(
    "argv, message",
    [  # before: a 22-line OverflowError traceback; "expected non-negative integer" naming no flag; errors from inside
        # softmax_cross_entropy and np.concatenate; gradcheck checking 5 of 20 ops and printing "27/27 passed"
        (
            ["train", "--seed", str(2**64)],
            f"argument --seed: expected a non-negative integer below 2**63, got '{2**64}'",
        ),
        (["train", "--seed", "-1"], "argument --seed: expected a non-negative integer below 2**63, got '-1'"),
        (["evaluate", "run", "--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
        (["evaluate", "run", "--batch-size", "-5"], "argument --batch-size: expected a positive integer, got '-5'"),
        (["gradcheck", "--repeats", "0"], "argument --repeats: expected a positive integer, got '0'"),
        (["gradcheck", "--repeats", "-1"], "argument --repeats: expected a positive integer, got '-1'"),
    ],
)
def test_out_of_range_integer_flags_are_refused_in_one_line(monkeypatch, capsys, argv, message):
    from tinyfn.cli import main

    monkeypatch.setenv("TINYFN_MALLOPT", "0")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"tinyfn {argv[0]}: error: {message}"), err


def test_evaluate_says_when_the_logits_are_not_finite(tiny_idx, tmp_path, monkeypatch, capsys):
    import jax

    from tinyfn.cli import main
    from tinyfn.models import get_model
    from tinyfn.train import model_record, save_checkpoint

    model = get_model("lenet5", num_classes=10)
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    nan = jax.tree.map(lambda a: np.full(a.shape, np.nan, np.float32), params)  # before: an "accuracy" of class 0
    meta = {"model": model_record(model, (1, 28, 28), name="lenet5", kwargs={"num_classes": 10}), "data": str(tiny_idx)}
    save_checkpoint(tmp_path / "checkpoint.safetensors", nan, metadata=meta)
    monkeypatch.setenv("TINYFN_MALLOPT", "0")
    assert main(["evaluate", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "test accuracy" not in out.out and "outputs are not finite on batch 0" in out.err, out
