"""Mixed precision: params and gradients stay float32, the products run in bfloat16 where asked."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import losses, models
from tinyfn.layers import Conv2D, Deconv2D, Linear, conv2d, deconv2d, linear

BF16 = jnp.bfloat16
# bfloat16 keeps 8 significant bits (relative rounding 2^-8 = 0.4%); sums of a few dozen products
# in it are good to about 1% of their scale.
BF16_RTOL = 2e-2


def _close_in_bf16(a, b, name):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)
    assert err <= BF16_RTOL, f"{name}: relative error {err:.3g} above bfloat16's {BF16_RTOL}"
    assert err > 0, f"{name}: identical to float32, so bfloat16 did not run"


LAYERS = {
    "Conv2D": (partial(Conv2D, 4, 3, stride=2, padding=1), (2, 3, 7, 6)),
    "Deconv2D": (partial(Deconv2D, 4, 3, stride=2, padding=1, output_padding=1), (2, 3, 4, 3)),
    "Linear": (partial(Linear, 5), (3, 7)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_a_bf16_layer_keeps_float32_params_and_gradients_close_to_the_float32_rule(name, rng):
    ctor, shape = LAYERS[name]
    layer, mixed = ctor(), ctor(compute_dtype=BF16)
    _, params = mixed.init(jax.random.key(0), shape)
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # a non-zero bias too
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    y = mixed.apply(params, x)
    assert y.dtype == BF16
    y32 = layer.apply(params, x)
    _close_in_bf16(y, y32, "output")
    g = jnp.asarray(rng.standard_normal(y32.shape), jnp.float32)
    loss = lambda lay: lambda p, x: jnp.vdot(lay.apply(p, x).astype(jnp.float32), g)  # noqa: E731
    grads16, grads32 = jax.grad(loss(mixed), (0, 1))(params, x), jax.grad(loss(layer), (0, 1))(params, x)
    flat16, flat32 = jax.tree_util.tree_leaves_with_path(grads16), jax.tree_util.tree_leaves(grads32)
    for (path, a), b in zip(flat16, flat32):
        assert a.dtype == jnp.float32, path  # gradients come back in the params' dtype
        _close_in_bf16(a, b, jax.tree_util.keystr(path))


def test_the_bf16_products_run_in_bf16_inside_the_handwritten_rules():
    x, w = jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3))
    layer = Conv2D(3, 3, compute_dtype=BF16, formulation="im2col")
    loss = lambda w: layer.apply({"w": w, "b": jnp.zeros(3)}, x).astype(jnp.float32).sum()  # noqa: E731
    eqns = jax.make_jaxpr(jax.grad(loss))(w).jaxpr.eqns
    dots = [e for e in eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 3  # Y = W X*, dX* = Wᵀ g, dW = g X*ᵀ
    assert all(v.aval.dtype == BF16 for e in dots for v in e.invars)


def test_a_bf16_model_trains_with_float32_params_and_a_float32_loss(rng):
    model = models.lenet5(compute_dtype=BF16)
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    x, labels = jnp.asarray(rng.standard_normal((8, 1, 28, 28)), jnp.float32), jnp.arange(8) % 10
    logits = model.apply(params, x)
    assert logits.dtype == jnp.float32
    loss = lambda p: losses.softmax_cross_entropy(model.apply(p, x), labels)  # noqa: E731
    ref = lambda p: losses.softmax_cross_entropy(models.lenet5().apply(p[:-1], x), labels)  # noqa: E731 (the same params, less Float32's empty entry)
    step = jax.jit(lambda p: jax.tree_util.tree_map(lambda a, g: a - 0.05 * g, p, jax.grad(loss)(p)))
    assert abs(float(loss(params)) - float(ref(params))) < 0.05 * abs(float(ref(params)))
    first = float(loss(params))
    for _ in range(5):
        params = step(params)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    assert float(loss(params)) < first


def test_without_a_policy_a_bf16_input_next_to_float32_params_is_refused_clearly():
    x = jnp.ones((1, 2, 5, 5), BF16)
    with pytest.raises(TypeError, match=r"conv2d: w has dtype float32 but x has dtype bfloat16"):
        conv2d(x, jnp.ones((3, 2, 3, 3)))
    with pytest.raises(TypeError, match=r"deconv2d: w has dtype float32 but x has dtype bfloat16"):
        deconv2d(x, jnp.ones((2, 3, 3, 3)))
    with pytest.raises(TypeError, match=r"linear: w has dtype float32 but x has dtype bfloat16"):
        linear(jnp.ones((2, 3), BF16), jnp.ones((3, 4)))
    # with a policy the same input is welcome
    assert Conv2D(3, 3, compute_dtype=BF16).apply({"w": jnp.ones((3, 2, 3, 3)), "b": jnp.zeros(3)}, x).dtype == BF16


def test_compute_dtype_must_be_a_floating_dtype():
    with pytest.raises(TypeError, match=r"Conv2D: compute_dtype must be a floating dtype"):
        Conv2D(3, 3, compute_dtype=jnp.int8)
    with pytest.raises(TypeError, match=r"Linear: compute_dtype must be a floating dtype"):
        Linear(3, compute_dtype="nonsense")
