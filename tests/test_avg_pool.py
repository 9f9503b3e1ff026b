"""Average pooling: the Law 1 rule against references, finite differences and PyTorch; layers' shapes."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinyfn import gradcheck, reference as R
from tinyfn.layers import AvgPool2D, GlobalAvgPool2D, avg_pool2d, global_avg_pool2d


@st.composite
def avg_pool_configs(draw):
    window = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = tuple(draw(st.integers(0, k // 2)) for k in window)
    hw = tuple(draw(st.integers(k, k + 4)) for k in window)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *hw)
    return {
        "shape": shape,
        "window": window,
        "stride": stride,
        "padding": padding,
        "count_include_pad": draw(st.booleans()),
    }


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
        y, vjp = jax.vjp(
            lambda x: avg_pool2d(x, window, stride=stride, padding=padding, count_include_pad=include), jnp.asarray(x)
        )
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


# --- float16 and bfloat16: window sums and means in float32, as PyTorch computes them ------------------------------
# Tolerance: relative to the largest output, two spacings of the dtype (float16 2^-10, bfloat16 2^-7 relative).
LOW = {"float16": (jnp.float16, 2e-3), "bfloat16": (jnp.bfloat16, 1.6e-2)}


def test_float16_averages_of_30000s_are_30000_as_in_pytorch():
    torch = pytest.importorskip("torch")
    x = jnp.full((1, 2, 4, 4), 30000, jnp.float16)  # a float16 sum of two of them is already inf
    t = torch.full((1, 2, 4, 4), 30000.0, dtype=torch.float16)
    np.testing.assert_array_equal(np.asarray(avg_pool2d(x, 2)), torch.nn.functional.avg_pool2d(t, 2).numpy())
    torch_global = torch.nn.functional.adaptive_avg_pool2d(t, 1).numpy()[..., 0, 0]
    np.testing.assert_array_equal(np.asarray(global_avg_pool2d(x)), torch_global)
    assert float(avg_pool2d(x, 2)[0, 0, 0, 0]) == 30000.0 and float(global_avg_pool2d(x)[0, 0]) == 30000.0


@pytest.mark.parametrize("dtype_name", LOW)
def test_low_precision_avg_pool_forward_and_backward_match_pytorch_float64(dtype_name):
    torch = pytest.importorskip("torch")
    dtype, rtol = LOW[dtype_name]
    rng = np.random.default_rng(7)
    x = jnp.asarray(20000 + 5000 * rng.standard_normal((2, 2, 6, 6)), dtype)
    ops = {
        "avg_pool2d": (
            lambda a: avg_pool2d(a, 3, stride=1, padding=1, count_include_pad=False),
            lambda a: torch.nn.functional.avg_pool2d(a, 3, stride=1, padding=1, count_include_pad=False),
        ),
        "global_avg_pool2d": (global_avg_pool2d, lambda a: a.mean(dim=(2, 3))),
    }
    for name, (ours, theirs) in ops.items():
        y, vjp = jax.vjp(ours, x)
        g = jnp.asarray(20000 + 5000 * rng.standard_normal(y.shape), dtype)
        (dx,) = vjp(g)
        xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
        yt = theirs(xt)
        yt.backward(torch.tensor(np.asarray(g, np.float64)))
        for a, b, what in ((y, yt.detach().numpy(), "output"), (dx, xt.grad.numpy(), "gradient")):
            err = np.abs(np.asarray(a, np.float64) - b).max()
            assert a.dtype == dtype and err <= rtol * np.abs(b).max(), (name, what, err)
