"""Batch norm and layer norm: handwritten rules against references, finite differences and PyTorch; state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinyfn import gradcheck, reference as R
from tinyfn.layers import (
    BatchNorm1D,
    BatchNorm2D,
    LayerNorm,
    apply_with_state,
    batch_norm,
    batch_norm_inference,
    batch_norm_with_stats,
    has_state,
    init_with_state,
    layer_norm,
)


@st.composite
def norm_shapes(draw, min_rank=2, max_rank=4):
    """``(N, C, ...)`` with at least two values per channel."""
    rank = draw(st.integers(min_rank, max_rank))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    n = draw(st.integers(2, 4))
    return (n,) + shape[1:]


def _normal(rng, shape, dtype=np.float64):
    return jnp.asarray(rng.standard_normal(shape), dtype)


@given(norm_shapes())
def test_batch_norm_rule_matches_reference_autodiff_and_finite_differences(shape):
    with jax.enable_x64(True):
        rng = np.random.default_rng(sum(shape))
        c = shape[1]
        args = (_normal(rng, shape), _normal(rng, (c,)), _normal(rng, (c,)))
        gradcheck.check_vjp(batch_norm, args, reference=R.batch_norm, argnames=("x", "gamma", "beta"))


@given(norm_shapes())
def test_batch_norm_with_stats_rule_covers_the_statistics_outputs(shape):
    # the cotangents of the mean and variance outputs are random too, so their terms in dx are checked
    with jax.enable_x64(True):
        rng = np.random.default_rng(sum(shape) + 3)
        c = shape[1]
        args = (_normal(rng, shape), _normal(rng, (c,)), _normal(rng, (c,)))
        gradcheck.check_vjp(
            batch_norm_with_stats, args, reference=R.batch_norm_with_stats, argnames=("x", "gamma", "beta")
        )


@given(norm_shapes(min_rank=2))
def test_batch_norm_inference_rule_matches_reference_and_finite_differences(shape):
    with jax.enable_x64(True):
        rng = np.random.default_rng(sum(shape) + 1)
        c = shape[1]
        args = (
            _normal(rng, shape),
            _normal(rng, (c,)),
            jnp.asarray(rng.uniform(0.5, 2, c)),
            _normal(rng, (c,)),
            _normal(rng, (c,)),
        )
        gradcheck.check_vjp(
            batch_norm_inference, args, reference=R.batch_norm_inference, argnames=("x", "mean", "var", "gamma", "beta")
        )


@given(norm_shapes(), st.integers(1, 2))
def test_layer_norm_rule_matches_reference_and_finite_differences(shape, k):
    k = min(k, len(shape) - 1)
    with jax.enable_x64(True):
        rng = np.random.default_rng(sum(shape) + 2)
        trailing = shape[len(shape) - k :]
        args = (_normal(rng, shape), _normal(rng, trailing), _normal(rng, trailing))
        gradcheck.check_vjp(
            lambda x, g, b: layer_norm(x, g, b, normalized_ndim=k),
            args,
            reference=lambda x, g, b: R.layer_norm(x, g, b, normalized_ndim=k),
            argnames=("x", "gamma", "beta"),
        )


def test_batch_norm_backward_is_the_closed_form(x64):
    """dx = (1/M) γ/σ (M g − Σg − x̂ Σ g x̂), computed here in numpy from the formula."""
    rng = np.random.default_rng(0)
    x, g, gamma = rng.standard_normal((5, 3, 2, 2)), rng.standard_normal((5, 3, 2, 2)), rng.standard_normal(3)
    _, vjp = jax.vjp(lambda x: batch_norm(x, jnp.asarray(gamma), None, eps=1e-3), jnp.asarray(x))
    m = 5 * 2 * 2
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    sigma = np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-3)
    x_hat = (x - mu) / sigma
    expected = (gamma[None, :, None, None] / sigma / m) * (
        m * g - g.sum(axis=(0, 2, 3), keepdims=True) - x_hat * (g * x_hat).sum(axis=(0, 2, 3), keepdims=True)
    )
    np.testing.assert_allclose(vjp(jnp.asarray(g))[0], expected, rtol=1e-10, atol=1e-12)


def _torch_bn_run(torch_module, model, x_batches, affine=True):
    """Train-mode steps then one eval step in both libraries; returns the outputs and states."""
    _, params, state = init_with_state(model, jax.random.key(0), (None,) + x_batches[0].shape[1:])
    outs = []
    for x in x_batches:
        y, state = apply_with_state(model, params, state, jnp.asarray(x), train=True)
        ty = torch_module(__import__("torch").tensor(x))
        outs.append((np.asarray(y), ty.detach().numpy()))
    torch_module.eval()
    y, same = apply_with_state(model, params, state, jnp.asarray(x_batches[0]), train=False)
    outs.append((np.asarray(y), torch_module(__import__("torch").tensor(x_batches[0])).detach().numpy()))
    jax.tree_util.tree_map(np.testing.assert_array_equal, same, state)  # eval leaves the state as it was
    return outs, state


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_2d_matches_torch_in_train_and_eval_with_running_statistics(affine):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((4, 3, 5, 5)) * 2 + 1).astype(np.float32) for _ in range(4)]
    tbn = torch.nn.BatchNorm2d(3, momentum=0.2, eps=1e-3, affine=affine)
    outs, state = _torch_bn_run(tbn, BatchNorm2D(momentum=0.2, eps=1e-3, affine=affine), batches)
    for ours, theirs in outs:
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state["mean"], tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["var"], tbn.running_var.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)])
def test_batch_norm_1d_matches_torch(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    tbn = torch.nn.BatchNorm1d(4)
    outs, state = _torch_bn_run(tbn, BatchNorm1D(), batches)
    for ours, theirs in outs:
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state["var"], tbn.running_var.numpy(), rtol=1e-5)


def test_batch_norm_gradients_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((4, 3, 3, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    torch.nn.functional.batch_norm(tx, None, None, tg, tb, training=True, eps=1e-5).backward(torch.tensor(g))
    with jax.enable_x64(True):
        _, vjp = jax.vjp(batch_norm, jnp.asarray(x), jnp.asarray(gamma), jnp.asarray(beta))
        for ours, theirs in zip(vjp(jnp.asarray(g)), (tx, tg, tb)):
            np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_layer_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    model = LayerNorm(normalized_ndim=3)
    _, params = model.init(jax.random.key(0), (None, 3, 4, 5))
    params = {
        "gamma": jnp.asarray(rng.standard_normal((3, 4, 5)), jnp.float32),
        "beta": jnp.asarray(rng.standard_normal((3, 4, 5)), jnp.float32),
    }
    want = torch.nn.functional.layer_norm(
        torch.tensor(x), (3, 4, 5), torch.tensor(np.asarray(params["gamma"])), torch.tensor(np.asarray(params["beta"]))
    )
    np.testing.assert_allclose(model.apply(params, jnp.asarray(x)), want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (BatchNorm2D(), (None, 3, 4, 5)),
        (BatchNorm2D(affine=False), (7, 2, 3, 3)),
        (BatchNorm1D(), (None, 6)),
        (BatchNorm1D(), (None, 6, 5)),
        (LayerNorm(), (None, 4)),
        (LayerNorm(3), (None, 2, 3, 4)),
    ],
)
def test_init_declares_the_shape_apply_produces(layer, shape):
    out, params, state = init_with_state(layer, jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), (3,) + shape[1:])
    for train in (True, False):
        y, _ = apply_with_state(layer, params, state, x, train=train)
        assert y.shape == (3,) + tuple(out[1:]) and out[0] == shape[0]


def test_batch_norm_is_stateful_and_its_plain_apply_says_what_to_use():
    layer = BatchNorm2D()
    assert has_state(layer) and not has_state(LayerNorm())
    shape, params = layer.init(jax.random.key(0), (None, 2, 3, 3))
    assert shape == (None, 2, 3, 3) and set(params) == {"gamma", "beta"}
    with pytest.raises(TypeError, match="BatchNorm2D: this layer carries state.*apply_with_state"):
        layer.apply(params, jnp.ones((2, 2, 3, 3)))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="batch_norm: expected more than 1 value per channel"):
        batch_norm(jnp.ones((1, 3)))
    with pytest.raises(ValueError, match=r"batch_norm: gamma has shape \(2,\), expected \(3,\)"):
        batch_norm(jnp.ones((2, 3)), jnp.ones(2))
    with pytest.raises(ValueError, match="BatchNorm2D: input_shape must be \\(N, C, H, W\\)"):
        init_with_state(BatchNorm2D(), jax.random.key(0), (None, 3))
    with pytest.raises(ValueError, match="BatchNorm1D: momentum must be in"):
        BatchNorm1D(momentum=1.5)
    with pytest.raises(ValueError, match="LayerNorm: eps must be a positive float"):
        LayerNorm(eps=0)


# --- float16 and bfloat16: statistics and sums in float32, as PyTorch computes them -------------------------------
# Tolerances per dtype, for outputs of magnitude < 4 (|x̂| ≤ 3 here): a float16 value there is spaced 2^-9 ≈ 2e-3
# apart, a bfloat16 one 2^-6 ≈ 1.6e-2; allowed: two spacings. Gradients: relative to their largest entry,
# 1e-2 (float16) and 5e-2 (bfloat16). The reference: PyTorch in float64 on the same (rounded) low-precision inputs.
LOW = {"float16": (jnp.float16, 4e-3, 1e-2), "bfloat16": (jnp.bfloat16, 3.2e-2, 5e-2)}


@pytest.mark.parametrize("norm", ["batch_norm", "layer_norm"])
@pytest.mark.parametrize("dtype_name", LOW)
def test_low_precision_norms_at_std_300_match_pytorch_float64(norm, dtype_name):
    torch = pytest.importorskip("torch")
    dtype, atol, grad_rtol = LOW[dtype_name]
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((4, 3, 5, 5)) * 300, dtype)  # variance 9e4: past float16's largest value 65504
    g = jnp.asarray(1000 + 100 * rng.standard_normal(x.shape), dtype)  # sums of 25 to 100 of them overflow float16 too
    ours = {"batch_norm": batch_norm, "layer_norm": lambda a: layer_norm(a, normalized_ndim=2)}[norm]
    y, vjp = jax.vjp(ours, x)
    (dx,) = vjp(g)
    assert y.dtype == dx.dtype == dtype
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    F = torch.nn.functional
    theirs = {
        "batch_norm": lambda a: F.batch_norm(a, None, None, training=True),
        "layer_norm": lambda a: F.layer_norm(a, (5, 5)),
    }[norm]
    yt = theirs(xt)
    yt.backward(torch.tensor(np.asarray(g, np.float64)))
    np.testing.assert_allclose(np.asarray(y, np.float64), yt.detach().numpy(), atol=atol)  # before: zeros in float16
    dx_ref = xt.grad.numpy()
    assert np.abs(np.asarray(dx, np.float64) - dx_ref).max() <= grad_rtol * np.abs(dx_ref).max()


def test_float16_batch_norm_statistics_are_float32_and_the_layer_keeps_finite_running_estimates():
    x = jnp.asarray(np.random.default_rng(4).standard_normal((8, 2, 3, 3)) * 300, jnp.float16)
    _, mean, var = batch_norm_with_stats(x)
    assert mean.dtype == var.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(var))) and float(var.min()) > 65504
    layer = BatchNorm2D()
    _, params, state = init_with_state(layer, jax.random.key(0), x.shape)
    _, state = apply_with_state(layer, params, state, x, train=True)
    assert np.all(np.isfinite(np.asarray(state["var"]))) and float(state["var"].min()) > 0.1 * 65504
