"""The handwritten rules compose with jit, vmap and grad, and are the rules that run."""

import re
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from strategies import distinct

from tinyfn import losses, models, reference as R
from tinyfn.layers import conv as conv_module, conv2d, deconv2d, max_pool2d, pool as pool_module


def _loss(w, x):
    y = max_pool2d(jax.nn.relu(conv2d(x, w, stride=1, padding=1)), 2)
    return jnp.sum(deconv2d(y, w[:, :2], stride=2) ** 2)


def _ref_loss(w, x):
    y = R.max_pool2d(jax.nn.relu(R.conv2d(x, w, stride=1, padding=1)), 2)
    return jnp.sum(R.deconv2d(y, w[:, :2], stride=2) ** 2)


def test_jit_vmap_and_grad_compose(rng):
    w = jnp.asarray(rng.standard_normal((3, 2, 3, 3)), jnp.float32)
    xs = jnp.asarray(distinct(rng, (4, 1, 2, 6, 6), gap=0.01))  # a batch of 4 single-image problems
    expected = np.stack([jax.grad(_ref_loss)(w, x) for x in xs])
    for name, fn in {
        "grad(jit)": lambda x: jax.grad(jax.jit(_loss))(w, x),
        "jit(grad)": lambda x: jax.jit(jax.grad(_loss))(w, x),
    }.items():
        np.testing.assert_allclose(fn(xs[0]), expected[0], rtol=2e-4, atol=1e-4, err_msg=name)
    per_example = jax.vmap(jax.grad(_loss), in_axes=(None, 0))(w, xs)
    np.testing.assert_allclose(per_example, expected, rtol=2e-4, atol=1e-4)
    grad_of_vmap = jax.grad(lambda w: jax.vmap(_loss, in_axes=(None, 0))(w, xs).sum())(w)
    np.testing.assert_allclose(grad_of_vmap, expected.sum(0), rtol=2e-4, atol=1e-4)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(_loss, in_axes=(None, 0)))(w, xs), jax.vmap(_ref_loss, in_axes=(None, 0))(w, xs), rtol=1e-5
    )


def test_every_layer_of_lenet_goes_through_its_custom_rule():
    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    x, y = jnp.zeros((2, 1, 28, 28)), jnp.array([1, 2])
    jaxpr = str(jax.make_jaxpr(lambda p: losses.softmax_cross_entropy(model.apply(p, x), y))(params))
    names = re.findall(r"custom_vjp_call\[\s*name=(\w+)", jaxpr)
    assert sorted(names) == sorted(
        ["_conv2d"] * 2 + ["_max_pool"] * 2 + ["_relu"] * 4 + ["_linear"] * 3 + ["_softmax_cross_entropy"]
    )


def test_pooling_gradient_comes_from_its_handwritten_rule(rng):
    x = jnp.asarray(distinct(rng, (1, 1, 4, 4)))
    marker = lambda g, code, window, stride, padding, in_hw: jnp.full((*g.shape[:2], *in_hw), 3.0, g.dtype)  # noqa: E731
    with mock.patch.object(pool_module, "_route_back", marker):
        dx = jax.jit(jax.grad(lambda x: max_pool2d(x, 2).sum()))(x)
    np.testing.assert_array_equal(np.asarray(dx), 3.0)


def test_a_distinguishable_rule_proves_the_custom_rule_runs_under_jit_and_vmap(rng):
    w = jnp.asarray(rng.standard_normal((3, 2, 3, 3)), jnp.float32)
    xs = jnp.asarray(rng.standard_normal((4, 1, 2, 5, 5)), jnp.float32)
    marker = lambda g, w, stride, padding, in_hw, *how: jnp.full((g.shape[0], w.shape[1], *in_hw), 7.0, g.dtype)  # noqa: E731
    loss = lambda x: conv2d(x, w).sum()  # noqa: E731
    with mock.patch.object(conv_module, "_conv_input_grad", marker):
        dx = jax.jit(jax.vmap(jax.grad(loss)))(xs)
    np.testing.assert_array_equal(np.asarray(dx), 7.0)
