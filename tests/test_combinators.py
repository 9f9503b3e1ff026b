"""Combinators and state: shapes, keys, params and state threading, and the stateful train/eval steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import losses
from tinyfn.layers import (
    Add,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Concat,
    Conv2D,
    Dropout,
    FanOut,
    Flatten,
    GlobalAvgPool2D,
    Identity,
    Linear,
    ReLU,
    apply_with_state,
    branch,
    has_state,
    init_with_state,
    parallel,
    residual,
    serial,
)
from tinyfn.train import adamw, apply_updates, make_eval_step, make_train_step, sgd

X_SHAPE = (3, 2, 6, 6)


def _combinators():
    block = serial(Conv2D(2, 3, padding=1), ReLU(), Conv2D(2, 3, padding=1))
    return {
        "branch": branch(Conv2D(3, 1), AvgPool2D(3, 1, 1)),
        "branch_concat": serial(branch(Conv2D(3, 1), serial(Conv2D(1, 1), ReLU(), Conv2D(4, 3, padding=1))), Concat()),
        "fan_out_parallel_add": serial(FanOut(2), parallel(Conv2D(2, 3, padding=1), Identity()), Add()),
        "residual": residual(block),
        "residual_projection": residual(serial(Conv2D(4, 3, stride=2, padding=1), ReLU()), Conv2D(4, 1, stride=2)),
        "residual_bn": residual(serial(Conv2D(2, 3, padding=1), BatchNorm2D())),
        "branch_bn": serial(branch(BatchNorm2D(), Conv2D(2, 1)), Add(), GlobalAvgPool2D(), Linear(3)),
    }


@pytest.mark.parametrize("name", list(_combinators()))
@pytest.mark.parametrize("batch", [None, 3])
def test_init_declares_the_shape_apply_produces(name, batch):
    model = _combinators()[name]
    out, params, state = init_with_state(model, jax.random.key(0), (batch,) + X_SHAPE[1:])
    x = jax.random.normal(jax.random.key(1), X_SHAPE)
    for train in (True, False):
        y, _ = apply_with_state(model, params, state, x, key=jax.random.key(2), train=train)
        shapes = jax.tree_util.tree_map(lambda a: a.shape, y)
        declared = out if isinstance(out[0], tuple) else (out,)
        got = shapes if isinstance(shapes, tuple) and isinstance(shapes[0], tuple) else (shapes,)
        assert [s[1:] for s in got] == [tuple(d[1:]) for d in declared]
        assert all(d[0] == batch for d in declared)


def test_residual_is_the_body_plus_the_shortcut(key):
    body, proj = Conv2D(4, 3, stride=2, padding=1), Conv2D(4, 1, stride=2)
    model = residual(body, proj)
    _, params = model.init(key, (None,) + X_SHAPE[1:])
    assert set(params) == {"body", "shortcut"}
    x = jax.random.normal(key, X_SHAPE)
    want = body.apply(params["body"], x) + proj.apply(params["shortcut"], x)
    np.testing.assert_allclose(model.apply(params, x), want, rtol=1e-6)
    plain = residual(ReLU())
    np.testing.assert_allclose(plain.apply(plain.init(key, (None, 3))[1], x), jnp.maximum(x, 0) + x)


def test_branch_and_concat_equal_running_the_layers_separately(key):
    a, b = Conv2D(3, 1), Conv2D(2, 3, padding=1)
    model = serial(branch(a, b), Concat())
    _, (pb, _) = model.init(key, (None,) + X_SHAPE[1:])
    x = jax.random.normal(key, X_SHAPE)
    want = jnp.concatenate([a.apply(pb[0], x), b.apply(pb[1], x)], axis=1)
    np.testing.assert_allclose(model.apply((pb, {}), x), want, rtol=1e-6)
    g = jax.grad(lambda p: model.apply((p, {}), x)[:, :3].sum())(pb)
    assert float(jnp.abs(g[1]["w"]).max()) == 0.0  # the second branch's channels got no cotangent


def test_each_child_gets_its_own_key():
    model = branch(Dropout(0.5), Dropout(0.5))
    x = jnp.ones((4, 50))
    y1, y2 = model.apply(model.init(jax.random.key(0), (None, 50))[1], x, key=jax.random.key(3), train=True)
    assert not np.array_equal(y1, y2)


def test_repr_shows_the_tree():
    model = residual(serial(Conv2D(2, 3), BatchNorm2D()), Conv2D(2, 1))
    text = repr(model)
    assert (
        text.startswith("residual(\n  serial(\n    Conv2D(")
        and "BatchNorm2D(momentum=0.1" in text
        and text.endswith(")\n)")
    )


def test_stateless_combinators_keep_the_plain_contract():
    model = serial(branch(Conv2D(2, 1), Conv2D(2, 1)), Add(), Flatten(), Linear(3))
    assert not has_state(model) and model.init_with_state is None and model.apply_with_state is None
    _, params, state = init_with_state(model, jax.random.key(0), (None,) + X_SHAPE[1:])
    assert state == {}
    x = jnp.ones(X_SHAPE)
    y, same = apply_with_state(model, params, state, x)
    np.testing.assert_array_equal(y, model.apply(params, x))
    assert same == {}


def _plain_and_stateful(name):
    """The combinator over stateless children (Linear first), and over a stateful one (BatchNorm1D first)."""
    build = {"serial": serial, "branch": branch, "parallel": parallel}.get(name)
    if build is None:
        return residual(Linear(3)), residual(BatchNorm1D())
    return build(Linear(3), ReLU()), build(BatchNorm1D(), ReLU())


@pytest.mark.parametrize("name", ["serial", "branch", "parallel", "residual"])
def test_each_combinator_is_stateless_over_stateless_children_and_stateful_over_a_stateful_one(name):
    """Written once in the stateful form; over stateless children the plain init/apply are derived from it."""
    plain, stateful = _plain_and_stateful(name)
    x = jax.random.normal(jax.random.key(1), (4, 3))
    inputs, shape = ((x, x), ((None, 3), (None, 3))) if name == "parallel" else (x, (None, 3))
    assert not has_state(plain) and plain.init_with_state is None and plain.apply_with_state is None
    _, params = plain.init(jax.random.key(0), shape)
    linear = params["body"] if name == "residual" else params[0]
    first = x @ linear["w"] + linear["b"][None, :]
    want = {
        "serial": jnp.maximum(first, 0),
        "branch": (first, jnp.maximum(x, 0)),
        "parallel": (first, jnp.maximum(x, 0)),
        "residual": first + x,
    }[name]
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), plain.apply(params, inputs), want)
    assert has_state(stateful) and stateful.init_with_state is not None
    with pytest.raises(TypeError, match=f"{name}: this layer carries state"):
        stateful.apply(stateful.init(jax.random.key(0), shape)[1], inputs)


def test_state_mirrors_params_and_is_threaded_through_every_combinator(key):
    model = _combinators()["branch_bn"]
    assert has_state(model)
    _, params, state = init_with_state(model, key, (None,) + X_SHAPE[1:])
    assert jax.tree_util.tree_structure(state[0][0]) == jax.tree_util.tree_structure({"mean": 0, "var": 0})
    x = jax.random.normal(key, X_SHAPE) * 3 + 2
    _, new = apply_with_state(model, params, state, x, train=True)
    np.testing.assert_allclose(new[0][0]["mean"], 0.1 * np.asarray(x).mean(axis=(0, 2, 3)), rtol=1e-5)
    with pytest.raises(TypeError, match="serial: this layer carries state"):
        model.apply(params, x)


def test_errors_name_the_combinator():
    with pytest.raises(TypeError, match="branch: argument 1 must be a Layer"):
        branch(ReLU(), lambda x: x)
    with pytest.raises(ValueError, match="residual: the body's output shape .* differs from the shortcut's"):
        residual(Conv2D(4, 3)).init(jax.random.key(0), (None, 2, 6, 6))
    with pytest.raises(ValueError, match="Add: branch 1 has shape"):
        serial(branch(Conv2D(2, 1), Conv2D(3, 1)), Add()).init(jax.random.key(0), (None, 2, 4, 4))
    with pytest.raises(ValueError, match="Concat: branch 1 has shape"):
        serial(branch(Conv2D(2, 1), Conv2D(3, 3)), Concat()).init(jax.random.key(0), (None, 2, 4, 4))
    with pytest.raises(ValueError, match="parallel: input_shape must be a tuple of 2"):
        parallel(ReLU(), ReLU()).init(jax.random.key(0), ((None, 2),))


def _bn_model():
    return serial(Conv2D(3, 3, padding=1), BatchNorm2D(), ReLU(), GlobalAvgPool2D(), Linear(4))


def test_stateful_train_step_updates_running_statistics_and_trains(key):
    model = _bn_model()
    _, params, state = init_with_state(model, key, (None, 1, 5, 5))
    x = jax.random.normal(jax.random.key(1), (16, 1, 5, 5)) * 2 + 1
    y = jnp.arange(16) % 4
    opt = adamw(0.05)
    step = make_train_step(model, losses.softmax_cross_entropy, opt, donate=False)
    s0, opt_state = state, opt.init(params)
    losses_seen = []
    for _ in range(15):
        params, state, opt_state, m = step(params, state, opt_state, x, y, key)
        losses_seen.append(float(m["loss"]))
    assert losses_seen[-1] < 0.9 * losses_seen[0]
    assert not np.allclose(state[1]["mean"], s0[1]["mean"])
    # the stateful step equals apply_with_state + grad + the optimizer, computed by hand for one step
    _, p0, st0 = init_with_state(model, key, (None, 1, 5, 5))
    (_, new_st), grads = jax.value_and_grad(
        lambda p: (lambda out: (losses.softmax_cross_entropy(out[0], y), out[1]))(
            apply_with_state(model, p, st0, x, key=key, train=True)
        ),
        has_aux=True,
    )(p0)
    # (with SGD: Adam would turn the bias-before-batch-norm's roundoff-sized gradient into a full step)
    opt = sgd(0.1)
    p1, st1, _, _ = make_train_step(model, losses.softmax_cross_entropy, opt, donate=False)(
        p0, st0, opt.init(p0), x, y, key
    )
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), st1, new_st)
    updates, _ = opt.update(grads, opt.init(p0), p0)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, apply_updates(p0, updates)
    )
    evaluate = make_eval_step(model, losses.softmax_cross_entropy)
    metrics = evaluate(params, state, x, y)
    want, _ = apply_with_state(model, params, state, x, train=False)
    np.testing.assert_array_equal(metrics["predictions"], jnp.argmax(want, axis=-1))


def test_a_stateful_model_needs_the_stateful_step():
    with pytest.raises(ValueError, match="make_train_step: the model carries state"):
        make_train_step(_bn_model(), losses.softmax_cross_entropy, sgd(0.1), with_state=False)
    # a stateless model can use the uniform stateful signature with state {}
    model = serial(Flatten(), Linear(2))
    _, params, state = init_with_state(model, jax.random.key(0), (None, 1, 2, 2))
    step = make_train_step(model, losses.softmax_cross_entropy, sgd(0.1), with_state=True, donate=False)
    _, new_state, _, m = step(
        params, state, sgd(0.1).init(params), jnp.ones((2, 1, 2, 2)), jnp.zeros(2, jnp.int32), jax.random.key(0)
    )
    assert new_state == {} and bool(m["finite"])
