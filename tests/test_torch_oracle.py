"""PyTorch as an extra oracle: same outputs and gradients for the same arguments (skipped without torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from strategies import conv_configs, deconv_configs, distinct, pool_configs

from tinyfn import losses
from tinyfn.layers import conv2d, deconv2d, max_pool2d, max_pool2d_with_switches, max_unpool2d

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


@given(conv_configs())
def test_conv2d_and_its_gradients_equal_pytorch(cfg):
    rng = np.random.default_rng(11)
    x, w, b = (
        rng.standard_normal(cfg["x_shape"]),
        rng.standard_normal(cfg["w_shape"]),
        rng.standard_normal(cfg["w_shape"][0]),
    )
    kw = dict(stride=cfg["stride"], padding=cfg["padding"])
    with jax.enable_x64(True):
        y, vjp = jax.vjp(jax.jit(lambda x, w, b: conv2d(x, w, b, **kw)), jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
        g = rng.standard_normal(y.shape)
        ours = vjp(jnp.asarray(g))
    tx, tw, tb = _t(x), _t(w), _t(b)
    ty = F.conv2d(tx, tw, tb, **kw)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for a, t in zip(ours, (tx, tw, tb)):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-10, atol=1e-10)


@given(deconv_configs())
def test_deconv2d_and_its_gradients_equal_pytorch(cfg):
    rng = np.random.default_rng(12)
    x, w, b = (
        rng.standard_normal(cfg["x_shape"]),
        rng.standard_normal(cfg["w_shape"]),
        rng.standard_normal(cfg["w_shape"][1]),
    )
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"])
    with jax.enable_x64(True):
        y, vjp = jax.vjp(
            jax.jit(lambda x, w, b: deconv2d(x, w, b, **kw)), jnp.asarray(x), jnp.asarray(w), jnp.asarray(b)
        )
        g = rng.standard_normal(y.shape)
        ours = vjp(jnp.asarray(g))
    tx, tw, tb = _t(x), _t(w), _t(b)
    ty = F.conv_transpose2d(tx, tw, tb, **kw)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for a, t in zip(ours, (tx, tw, tb)):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-10, atol=1e-10)


@given(pool_configs())
def test_max_pool_switches_unpool_and_gradients_equal_pytorch(cfg):
    rng = np.random.default_rng(13)
    x = distinct(rng, cfg["x_shape"], dtype=np.float64).round(0)  # rounding makes ties: first maximum must win
    kw = dict(stride=cfg["stride"], padding=cfg["padding"])
    with jax.enable_x64(True):
        y, switches = jax.jit(lambda x: max_pool2d_with_switches(x, cfg["window"], **kw))(jnp.asarray(x))
        g = rng.standard_normal(y.shape)
        dx = jax.vjp(jax.jit(lambda x: max_pool2d(x, cfg["window"], **kw)), jnp.asarray(x))[1](jnp.asarray(g))[0]
        unpooled = max_unpool2d(jnp.asarray(g), switches, x.shape[2:])
    tx = _t(x)
    ty, ti = F.max_pool2d(tx, cfg["window"], return_indices=True, **kw)
    ty.backward(torch.tensor(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(switches, ti.numpy())
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        unpooled, tx.grad.numpy(), rtol=1e-12, atol=1e-12
    )  # unpooling = pooling's routing transposed
    if tuple(cfg["window"]) == tuple(cfg["stride"]):  # non-overlapping: PyTorch's unpool agrees
        tu = F.max_unpool2d(
            torch.tensor(g), ti, cfg["window"], cfg["stride"], cfg["padding"], output_size=list(x.shape[2:])
        )
        np.testing.assert_allclose(unpooled, tu.numpy(), rtol=1e-12)


# Fixed cases that reach every kernel path, under every formulation (and im2col's batch chunks):
# a one-output-channel filter, a single input channel under a 1x1 filter, the configuration whose XLA
# autodiff aborts, a transposed conv with output_padding.
CONV_CASES = [
    ("conv2d", (2, 3, 6, 5), (1, 3, 3, 2), dict(stride=(1, 2), padding=1)),
    ("conv2d", (2, 1, 5, 4), (3, 1, 1, 1), dict(stride=2, padding=0)),
    ("conv2d", (2, 3, 6, 4), (3, 3, 2, 4), dict(stride=(2, 3), padding=(1, 2))),
    ("deconv2d", (2, 3, 3, 4), (3, 2, 3, 2), dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2))),
    ("deconv2d", (1, 2, 4, 3), (2, 1, 2, 3), dict(stride=1, padding=(0, 1), output_padding=0)),
]
VARIANTS = [
    dict(formulation="im2col"),
    dict(formulation="xla"),
    dict(formulation="direct"),
    dict(formulation="im2col", chunk_bytes=64),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=["im2col", "xla", "direct", "im2col-chunked"])
@pytest.mark.parametrize("op, x_shape, w_shape, kw", CONV_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CONV_CASES)])
def test_every_conv_formulation_equals_pytorch(op, x_shape, w_shape, kw, variant):
    rng = np.random.default_rng(14)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0] if op == "conv2d" else w_shape[1])
    ours_op, torch_op = (conv2d, F.conv2d) if op == "conv2d" else (deconv2d, F.conv_transpose2d)
    with jax.enable_x64(True):
        y, vjp = jax.vjp(
            jax.jit(lambda x, w, b: ours_op(x, w, b, **kw, **variant)), jnp.asarray(x), jnp.asarray(w), jnp.asarray(b)
        )
        g = rng.standard_normal(y.shape)
        ours = vjp(jnp.asarray(g))
    tx, tw, tb = _t(x), _t(w), _t(b)
    ty = torch_op(tx, tw, tb, **kw)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for a, t in zip(ours, (tx, tw, tb)):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-10, atol=1e-10)


# Every routing geometry: tiled, tiled with a remainder, overlapping, gapped, padded.
POOL_CASES = [
    ((4, 6), 2, 2, 0),
    ((5, 5), 2, 2, 0),
    ((5, 7), (2, 3), (2, 3), 0),
    ((5, 4), (3, 2), (1, 2), 0),
    ((7, 6), 2, 3, 0),
    ((5, 6), 3, 2, 1),
]


@pytest.mark.parametrize("name", ["im2col", "xla", "direct"])
@pytest.mark.parametrize("hw, window, stride, padding", POOL_CASES)
def test_pooling_with_exact_ties_equals_pytorch_in_every_geometry_and_formulation(hw, window, stride, padding, name):
    rng = np.random.default_rng(15)
    x = rng.integers(0, 3, (2, 2, *hw)).astype(np.float64)  # three values only: ties in nearly every window
    kw = dict(stride=stride, padding=padding)
    with jax.enable_x64(True):
        y, switches = jax.jit(lambda x: max_pool2d_with_switches(x, window, formulation=name, **kw))(jnp.asarray(x))
        g = rng.standard_normal(y.shape)
        dx = jax.vjp(jax.jit(lambda x: max_pool2d(x, window, formulation=name, **kw)), jnp.asarray(x))[1](
            jnp.asarray(g)
        )[0]
    tx = _t(x)
    ty, ti = F.max_pool2d(tx, window, return_indices=True, **kw)
    ty.backward(torch.tensor(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(switches, ti.numpy())
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["im2col", "xla", "direct"])
def test_all_minus_inf_windows_with_padding_pick_the_switches_pytorch_picks(name):
    x = np.full((1, 2, 3, 2), -np.inf)
    x[0, 1, 2, 1] = -7.0
    with jax.enable_x64(True):
        _, switches = max_pool2d_with_switches(jnp.asarray(x), 3, stride=1, padding=1, formulation=name)
    _, ti = F.max_pool2d(torch.tensor(x), 3, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(switches, ti.numpy())


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4])
def test_softmax_cross_entropy_with_label_smoothing_equals_pytorch(smoothing):
    rng = np.random.default_rng(5)
    logits, labels = rng.standard_normal((7, 5)) * 3, rng.integers(0, 5, 7)
    with jax.enable_x64(True):
        loss, grad = jax.value_and_grad(
            lambda z: losses.softmax_cross_entropy(z, jnp.asarray(labels), label_smoothing=smoothing)
        )(jnp.asarray(logits))
    tz = _t(logits)
    tl = F.cross_entropy(tz, torch.tensor(labels), label_smoothing=smoothing)
    tl.backward()
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-10, atol=1e-12)
