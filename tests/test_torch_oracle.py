"""PyTorch as an extra oracle: same outputs and gradients for the same arguments (skipped without torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

from strategies import conv_configs, deconv_configs, distinct, pool_configs
from tinyfn.layers import conv2d, deconv2d, max_pool2d, max_pool2d_with_switches, max_unpool2d

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


@given(conv_configs())
def test_conv2d_and_its_gradients_equal_pytorch(cfg):
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal(cfg["x_shape"]), rng.standard_normal(cfg["w_shape"]), rng.standard_normal(cfg["w_shape"][0])
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
    x, w, b = rng.standard_normal(cfg["x_shape"]), rng.standard_normal(cfg["w_shape"]), rng.standard_normal(cfg["w_shape"][1])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"])
    with jax.enable_x64(True):
        y, vjp = jax.vjp(jax.jit(lambda x, w, b: deconv2d(x, w, b, **kw)), jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
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
    np.testing.assert_allclose(unpooled, tx.grad.numpy(), rtol=1e-12, atol=1e-12)  # unpooling = pooling's routing transposed
    if tuple(cfg["window"]) == tuple(cfg["stride"]):  # non-overlapping: PyTorch's unpool agrees
        tu = F.max_unpool2d(torch.tensor(g), ti, cfg["window"], cfg["stride"], cfg["padding"], output_size=list(x.shape[2:]))
        np.testing.assert_allclose(unpooled, tu.numpy(), rtol=1e-12)
