"""Data parallelism over 8 CPU devices (``--xla_force_host_platform_device_count=8``), in subprocesses:
the device count is fixed when JAX starts, and the rest of the suite runs on one."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")

# float32 sums in another order: each device reduces its 1/8 of the batch, then the all-reduce adds the parts
RTOL, ATOL = 2e-5, 2e-6

SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    import numpy as np, jax, jax.numpy as jnp
    from tinyfn import losses, models
    from tinyfn.train import data_mesh, fit, load_checkpoint, make_train_step, sgd

    assert len(jax.devices()) == 8, jax.devices()
    out = {}
    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 32).astype(np.int32)
    opt = sgd(0.1, momentum=0.9)

    def run(mesh, steps=2):
        step = make_train_step(model, losses.softmax_cross_entropy, opt, mesh=mesh, donate=False)
        p, s = params, opt.init(params)
        for i in range(steps):
            p, s, m = step(p, s, x, y, jax.random.key(i))
        return p, m

    p1, m1 = run(None)
    mesh = data_mesh(8)
    p8, m8 = run(mesh)
    out["loss"] = [float(m1["loss"]), float(m8["loss"])]
    out["max_param_diff"] = max(
        float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8))
    )
    out["max_param_scale"] = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(p1))
    out["param_devices"] = len(jax.tree.leaves(p8)[0].sharding.device_set)
    out["metrics_replicated"] = m8["loss"].sharding.is_fully_replicated

    try:
        make_train_step(model, losses.softmax_cross_entropy, opt, mesh=mesh)(
            params, opt.init(params), x[:12], y[:12], jax.random.key(0)
        )
    except ValueError as e:
        out["step_error"] = str(e)
    try:
        fit(model, params, (x, y), epochs=1, batch_size=12, optimizer=opt, key=jax.random.key(0), quiet=True, mesh=mesh)
    except ValueError as e:
        out["fit_error"] = str(e)

    # fit end to end on 8 devices: checkpoint written from the replicated params, resumable, same as 1 device
    xs = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    ys = rng.integers(0, 10, 64).astype(np.int32)
    with tempfile.TemporaryDirectory() as d:
        kw = dict(epochs=2, batch_size=16, optimizer=opt, key=jax.random.key(3), quiet=True)
        pf8, h8 = fit(model, params, (xs, ys), mesh=data_mesh(8), checkpoint_dir=d, eval_data=(xs, ys), **kw)
        pf1, h1 = fit(model, params, (xs, ys), eval_data=(xs, ys), **kw)
        ck = load_checkpoint(d + "/checkpoint.safetensors", like=params)
        out["fit_loss"] = [h1["train_loss"], h8["train_loss"]]
        out["fit_diff"] = max(
            float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(pf1), jax.tree.leaves(pf8))
        )
        out["ckpt_diff"] = max(
            float(jnp.max(jnp.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(ck.params), jax.tree.leaves(pf8))
        )
        pr, hr = fit(model, params, (xs, ys), mesh=data_mesh(8), checkpoint_dir=d, resume=True, **dict(kw, epochs=3))
        out["resumed_epochs"] = hr["epoch"]
        out["resumed_devices"] = len(jax.tree.leaves(pr)[0].sharding.device_set)

    # batch norm on 8 devices: the statistics are over the global batch, equal to one device's
    from tinyfn.layers import BatchNorm2D, Conv2D, Flatten, Linear, ReLU, init_with_state, serial
    bn = serial(Conv2D(3, 5, stride=3, use_bias=False), BatchNorm2D(momentum=1.0), ReLU(), Flatten(), Linear(10))
    _, bp, bs = init_with_state(bn, jax.random.key(1), (None, 1, 28, 28))

    def run_bn(mesh):
        step = make_train_step(bn, losses.softmax_cross_entropy, opt, mesh=mesh, donate=False, with_state=True)
        return step(bp, bs, opt.init(bp), x, y, jax.random.key(0))

    p1, s1, _, _ = run_bn(None)
    p8, s8, _, _ = run_bn(mesh)
    conv_out = np.asarray(bn.children[0].apply(bp[0], jnp.asarray(x)))
    out["bn_state_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)))
    out["bn_param_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)))
    # momentum 1.0: the running mean is the batch mean itself; the global one, not the first device's 4 images
    out["bn_mean_vs_global"] = float(np.max(np.abs(np.asarray(s8[1]["mean"]) - conv_out.mean(axis=(0, 2, 3)))))
    out["bn_mean_vs_shard"] = float(np.max(np.abs(np.asarray(s8[1]["mean"]) - conv_out[:4].mean(axis=(0, 2, 3)))))
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def result():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eight_device_step_equals_one_device_step(result):
    loss1, loss8 = result["loss"]
    assert abs(loss1 - loss8) <= ATOL + RTOL * abs(loss1)
    assert result["max_param_diff"] <= ATOL + RTOL * result["max_param_scale"]
    assert result["param_devices"] == 8 and result["metrics_replicated"]


def test_batch_that_does_not_divide_names_the_sizes(result):
    for key in ("step_error", "fit_error"):
        assert "batch_size 12 does not divide over the 8 devices" in result[key], result


def test_fit_on_eight_devices_matches_one_device_and_checkpoints_resume(result):
    np_loss1, np_loss8 = result["fit_loss"]
    assert len(np_loss8) == 2 and all(abs(a - b) <= 1e-4 * abs(a) for a, b in zip(np_loss1, np_loss8))
    assert result["fit_diff"] < 1e-4
    assert result["ckpt_diff"] == 0.0
    assert result["resumed_epochs"] == [1, 2, 3] and result["resumed_devices"] == 8


def test_batch_norm_on_eight_devices_uses_the_global_batch_statistics(result):
    assert result["bn_state_diff"] <= ATOL and result["bn_param_diff"] <= ATOL, result
    assert result["bn_mean_vs_global"] <= 1e-5 < result["bn_mean_vs_shard"], result


@pytest.mark.slow
def test_cli_trains_on_eight_devices(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "tinyfn",
        "train",
        "--devices",
        "8",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc = float(proc.stdout.strip().splitlines()[-1].removeprefix("test accuracy: "))
    assert acc > 0.6  # one epoch of LeNet-5 on the embedded data
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()


def test_cli_names_a_batch_that_does_not_divide(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "tinyfn",
        "train",
        "--devices",
        "8",
        "--batch-size",
        "60",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "r"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
    assert proc.returncode == 2
    assert "batch_size 60 does not divide over the 8 devices" in proc.stderr and "Traceback" not in proc.stderr
