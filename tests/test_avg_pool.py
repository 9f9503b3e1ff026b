"""Average pooling: the Law 1 rule against references, finite differences and PyTorch; layers' shapes."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyfn import gradcheck, reference as R
from tinyfn.layers import AvgPool2D, GlobalAvgPool2D, avg_pool2d, global_avg_pool2d


@st.composite
def avg_pool_configs(draw):
    window = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = tuple(draw(st.integers(0, k // 2)) for k in window)
    hw = tuple(draw(st.integers(k, k + 4)) for k in window)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *hw)
    return {"shape": shape, "window": window, "stride": stride, "padding": padding, "count_include_pad": draw(st.booleans())}


@given(avg_pool_configs())
def test_avg_pool_rule_matches_reference_and_finite_differences(cfg):
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(sum(cfg["shape"])).standard_normal(cfg["shape"]))
        kw = {k: cfg[k] for k in ("window", "stride", "padding", "count_include_pad")}
        np.testing.assert_allclose(*jax.jit(lambda x: (avg_pool2d(x, **kw), R.avg_pool2d(x, **kw)))(x), rtol=1e-12)
        gradcheck.check_vjp(partial(avg_pool2d, **kw), (x,), reference=partial(R.avg_pool2d, **kw), argnames=("x",))


@pytest.mark.parametrize(
    "window, stride, padding, include",
    [(2, None, 0, True), (3, 2, 1, True), (3, 2, 1, False), ((2, 3), (1, 2), (1, 1), False), (3, 1, 1, True)],
)
def test_avg_pool_and_its_gradient_match_pytorch(window, stride, padding, include):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, shape = rng.standard_normal((2, 3, 7, 6)), None
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.avg_pool2d(tx, window, stride=stride, padding=padding, count_include_pad=include)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    with jax.enable_x64(True):
        y, vjp = jax.vjp(lambda x: avg_pool2d(x, window, stride=stride, padding=padding, count_include_pad=include), jnp.asarray(x))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(vjp(jnp.asarray(g))[0], tx.grad.numpy(), rtol=1e-12)
    del shape


def test_avg_pool_backward_is_the_transpose_of_the_forward(x64):
    """<A x, g> == <x, Aᵀ g>: the adjoint identity of Law 1's constant matrix."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 2, 6, 5)))
    f = partial(avg_pool2d, window=3, stride=2, padding=1, count_include_pad=False)
    y, vjp = jax.vjp(f, x)
    g = jnp.asarray(rng.standard_normal(y.shape))
    np.testing.assert_allclose(jnp.vdot(y, g), jnp.vdot(x, vjp(g)[0]), rtol=1e-12)


def test_global_avg_pool_rule_and_pytorch(x64):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5))
    gradcheck.check_vjp(global_avg_pool2d, (jnp.asarray(x),), reference=R.global_avg_pool2d, argnames=("x",))
    want = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), 1)[:, :, 0, 0].numpy()
    np.testing.assert_allclose(global_avg_pool2d(jnp.asarray(x)), want, rtol=1e-12)


@given(avg_pool_configs(), st.booleans())
def test_init_declares_the_shape_apply_produces(cfg, batch_none):
    layer = AvgPool2D(cfg["window"], cfg["stride"], cfg["padding"], cfg["count_include_pad"])
    in_shape = ((None if batch_none else cfg["shape"][0]),) + cfg["shape"][1:]
    out, params = layer.init(jax.random.key(0), in_shape)
    assert params == {}
    y = layer.apply(params, jnp.ones(cfg["shape"]))
    assert tuple(y.shape[1:]) == tuple(out[1:]) and out[0] == in_shape[0]
    out, _ = GlobalAvgPool2D().init(None, in_shape)
    assert GlobalAvgPool2D().apply({}, jnp.ones(cfg["shape"])).shape[1:] == out[1:]


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"avg_pool2d: x must have rank 4 \(N, C, H, W\), got shape \(3, 4\)"):
        avg_pool2d(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="AvgPool2D: padding .* must be at most half of window"):
        AvgPool2D(2, padding=2)
    with pytest.raises(ValueError, match="AvgPool2D: window .* is larger than the padded input"):
        AvgPool2D(5).init(None, (None, 1, 3, 3))
    with pytest.raises(ValueError, match="GlobalAvgPool2D: input_shape must have 4 entries"):
        GlobalAvgPool2D().init(None, (None, 3))
