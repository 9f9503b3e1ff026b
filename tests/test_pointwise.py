"""leaky_relu, sigmoid, tanh, silu and gelu: each handwritten rule equals autodiff of the reference, finite
differences, forward-over-reverse and PyTorch, stays finite for huge inputs, and its layer round-trips as a spec."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from strategies import off_kink

from tinyfn import gradcheck, reference as R
from tinyfn.layers import (
    GELU,
    LeakyReLU,
    Sigmoid,
    SiLU,
    Tanh,
    from_spec,
    gelu,
    leaky_relu,
    serial,
    sigmoid,
    silu,
    tanh,
    to_spec,
)

# ---- for the op registry: each op, its reference, a sampler of valid random arguments and a PyTorch oracle ----

OPS = {
    "leaky_relu": (leaky_relu, R.leaky_relu),
    "sigmoid": (sigmoid, R.sigmoid),
    "tanh": (tanh, R.tanh),
    "silu": (silu, R.silu),
    "gelu": (gelu, R.gelu),
    "gelu_tanh": (partial(gelu, approximate=True), partial(R.gelu, approximate=True)),
}


def sample(name, rng, dtype=np.float64):
    """``(args, kwargs)`` valid for op ``name``: a small array kept 0.1 away from leaky_relu's kink at 0."""
    x = off_kink(rng, (3, 4), dtype=dtype) * 2
    return (x,), ({"negative_slope": 0.2} if name == "leaky_relu" else {})


def torch_oracle(name):
    """PyTorch's op of the same name and signature, on torch tensors."""
    import torch

    F = torch.nn.functional
    return {
        "leaky_relu": lambda x, negative_slope=0.01: F.leaky_relu(x, negative_slope),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "silu": F.silu,
        "gelu": lambda x: F.gelu(x, approximate="none"),
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    }[name]


# ---- tests ----


@pytest.mark.parametrize("name", OPS)
def test_each_rule_matches_autodiff_of_the_reference_and_finite_differences(name, rng):
    ours, ref = OPS[name]
    with jax.enable_x64(True):
        args, kw = sample(name, rng)
        np.testing.assert_allclose(ours(*args, **kw), ref(*args, **kw), rtol=1e-12, atol=1e-14)
        gradcheck.check_vjp(partial(ours, **kw), args, reference=partial(ref, **kw))


@pytest.mark.parametrize("name", OPS)
def test_each_op_and_its_gradient_equal_pytorch(name, rng):
    torch = pytest.importorskip("torch")
    ours, _ = OPS[name]
    with jax.enable_x64(True):
        (x,), kw = sample(name, rng)
        g = rng.standard_normal(x.shape)
        y, vjp = jax.vjp(partial(ours, **kw), jnp.asarray(x))
        tx = torch.tensor(x, requires_grad=True)
        ty = torch_oracle(name)(tx, **kw)
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(vjp(jnp.asarray(g))[0], tx.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", OPS)
def test_hessian_through_each_rule_equals_the_references(name):
    ours, ref = OPS[name]
    with jax.enable_x64(True):
        x = jnp.array([-2.5, -0.7, 0.3, 1.1, 3.0])
        c = jnp.array([1.0, -2.0, 0.5, 3.0, -1.0])
        h = jax.jit(jax.hessian(lambda x: jnp.sum(c * ours(x) ** 2)))(x)
        theirs = jax.jit(jax.hessian(lambda x: jnp.sum(c * ref(x) ** 2)))(x)
        np.testing.assert_allclose(h, theirs, rtol=1e-10, atol=1e-12)


def test_leaky_relu_passes_the_slope_below_zero_and_at_the_kink():
    x = jnp.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(leaky_relu(x, 0.1), [-0.2, 0.0, 3.0], rtol=1e-6)
    g = jax.grad(lambda x: jnp.sum(leaky_relu(x, 0.1) * jnp.array([1.0, 2.0, 3.0])))(x)
    np.testing.assert_allclose(g, [0.1, 0.2, 3.0], rtol=1e-6)  # PyTorch: slope at 0 too


def test_sigmoid_silu_and_gelu_stay_finite_and_exact_for_huge_inputs():
    x = jnp.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    tiny = 1 / (1 + np.exp(30.0))  # σ(-30) ≈ 9.4e-14: kept to full relative precision, not rounded to 0 by 1 - σ(30)
    np.testing.assert_allclose(sigmoid(x), [0.0, tiny, 0.5, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(silu(x), [0.0, -30.0 * tiny, 0.0, 30.0, 1000.0], rtol=1e-6)
    np.testing.assert_allclose(gelu(x), [0.0, 0.0, 0.0, 30.0, 1000.0], rtol=1e-6)
    for f in (sigmoid, silu, tanh, gelu, partial(gelu, approximate=True)):
        g = jax.grad(lambda x, f=f: jnp.sum(f(x)))(x)
        assert np.isfinite(np.asarray(g)).all(), f
        np.testing.assert_allclose(np.asarray(g)[[0, -1]], [0.0, 0.0 if f in (sigmoid, tanh) else 1.0], atol=1e-30)


@pytest.mark.parametrize("name", ["leaky_relu", "silu", "gelu_tanh"])
def test_jit_and_vmap_of_the_rule_equal_the_eager_gradient(name, rng):
    ours, _ = OPS[name]
    x = jnp.asarray(off_kink(rng, (2, 3)))
    grad = jax.grad(lambda x: jnp.sum(ours(x) ** 2))
    eager = grad(x)
    np.testing.assert_allclose(jax.jit(grad)(x), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(grad))(x), eager, rtol=1e-6)


def test_the_layers_apply_their_op_and_round_trip_through_a_spec(rng, key):
    model = serial(LeakyReLU(0.2), Sigmoid(), Tanh(), SiLU(), GELU(approximate="tanh"), GELU())
    x = jnp.asarray(rng.standard_normal((2, 3)), jnp.float32)
    shape, params = model.init(key, (None, 3))
    assert shape == (None, 3) and params == ({},) * 6
    expected = gelu(gelu(silu(tanh(sigmoid(leaky_relu(x, 0.2)))), approximate=True))
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-6)
    rebuilt = from_spec(to_spec(model))
    assert to_spec(rebuilt) == to_spec(model)
    assert rebuilt.children[0].config == {"negative_slope": 0.2} and rebuilt.children[4].config == {"approximate": True}
    np.testing.assert_array_equal(rebuilt.apply(params, x), model.apply(params, x))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: leaky_relu(jnp.ones(2), "0.1"),
            ValueError,
            r"^leaky_relu: negative_slope must be a finite float, got '0.1'",
        ),
        (lambda: LeakyReLU(float("nan")), ValueError, r"^LeakyReLU: negative_slope must be a finite float, got nan"),
        (
            lambda: gelu(jnp.ones(2), approximate="exact"),
            ValueError,
            r"^gelu: approximate must be False or 'none'.*got 'exact'",
        ),
        (lambda: GELU(approximate=1), ValueError, r"^GELU: approximate must be .*got 1"),
        (lambda: sigmoid(jnp.arange(3)), TypeError, r"^sigmoid: x must have a floating dtype, got int32"),
    ],
)
def test_bad_arguments_are_refused_by_name(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("name", OPS)
def test_each_op_runs_through_its_handwritten_rule(name):
    (x,), kw = sample(name, np.random.default_rng(0), np.float32)
    assert "custom_vjp_call" in {e.primitive.name for e in jax.make_jaxpr(partial(OPS[name][0], **kw))(x).eqns}
