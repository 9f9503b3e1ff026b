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


# --- optimizers on bfloat16 params: their arithmetic is float32 whatever the params' dtype ----------------------


def _bf16_problem():
    """A least-squares fit ``0.5 mean((X w - y)²)`` with bfloat16 params ``w`` (3 of them)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    y = x @ jnp.asarray([3.0, -2.0, 1.5]) + 4.0
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    loss = lambda p: 0.5 * jnp.mean((x @ f32(p["w"]) + f32(p["b"]) - y) ** 2)  # noqa: E731
    return {"w": jnp.zeros(3, BF16), "b": jnp.zeros((), BF16)}, jax.jit(jax.value_and_grad(loss))


def _train(opt, params, value_and_grad, steps=50):
    from tinyfn.train import apply_updates

    state, losses_ = opt.init(params), []
    for _ in range(steps):
        loss, grads = value_and_grad(params)
        updates, state = opt.update(grads, state, params)
        params = apply_updates(params, updates)
        losses_.append(float(loss))
    assert all(a.dtype == BF16 for a in jax.tree.leaves(params))
    return losses_


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd_momentum", "sgd_nesterov"])
def test_optimizers_move_bf16_params_as_optax_does(name):
    optax = pytest.importorskip("optax")
    from tinyfn import train

    ours, theirs = {
        "adam": (train.adam(0.1), optax.adam(0.1)),
        "adamw": (train.adamw(0.1, weight_decay=1e-2), optax.adamw(0.1, weight_decay=1e-2)),
        "sgd_momentum": (
            train.sgd(0.02, momentum=0.9, weight_decay=1e-3),
            optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.02, momentum=0.9)),
        ),
        "sgd_nesterov": (train.sgd(0.02, momentum=0.9, nesterov=True), optax.sgd(0.02, momentum=0.9, nesterov=True)),
    }[name]
    params, value_and_grad = _bf16_problem()
    grads = value_and_grad(params)[1]
    first = ours.update(grads, ours.init(params), params)[0]
    expected = theirs.update(grads, theirs.init(params), params)[0]
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(expected)):  # the first update, to one bfloat16 ulp (2^-7)
        assert a.dtype == BF16 and np.any(np.asarray(a, np.float32) != 0)
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=2**-7)
    ours_losses, their_losses = _train(ours, params, value_and_grad), _train(theirs, params, value_and_grad)
    assert ours_losses[-1] < 0.2 * ours_losses[0]  # it trains (adam/adamw before the fix: every update 0)
    # optax keeps moments in bfloat16, tinyfn in float32: the curves agree to bfloat16's resolution of the params
    assert ours_losses[-1] == pytest.approx(their_losses[-1], rel=0.25, abs=0.05), (ours_losses[-1], their_losses[-1])


def test_optimizer_moments_are_float32_for_bf16_params_and_float64_for_float64(x64):
    from tinyfn.train import adam, sgd

    bf = {"w": jnp.zeros(2, BF16)}
    assert {a.dtype for a in jax.tree.leaves(adam(0.1).init(bf))} == {jnp.dtype(jnp.int32), jnp.dtype(jnp.float32)}
    assert sgd(0.1, momentum=0.9).init(bf).velocity["w"].dtype == jnp.float32
    assert adam(0.1).init({"w": jnp.zeros(2, jnp.float64)}).mu["w"].dtype == jnp.float64


def test_a_bf16_resnet_keeps_float32_batch_norm_statistics_close_to_the_float32_model():
    from tinyfn.layers import apply_with_state, init_with_state

    small = dict(width=4, blocks_per_stage=1, stages=1)
    mixed, plain = models.resnet(3, compute_dtype=BF16, **small), models.resnet(3, **small)
    _, params, state = init_with_state(mixed, jax.random.key(0), (None, 1, 12, 12))  # plain's and a Float32's: ()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 1, 12, 12)) * 50 + 20, jnp.float32)
    y16, s16 = apply_with_state(mixed, params, state, x, train=True)
    y32, s32 = apply_with_state(plain, params[:-1], state[:-1], x, train=True)
    assert y16.dtype == jnp.float32 and all(a.dtype == jnp.float32 for a in jax.tree.leaves(s16))
    _close_in_bf16(y16, y32, "logits")
    for a, b in zip(
        jax.tree.leaves(s16), jax.tree.leaves(s32)
    ):  # the running statistics, from float32 batch statistics
        _close_in_bf16(a, b, "running statistics")
