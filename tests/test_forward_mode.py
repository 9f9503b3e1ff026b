"""Forward-over-reverse (``jax.hessian``) runs through every op's handwritten rule and equals the reference's."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import losses, reference as R
from tinyfn.layers import conv2d, deconv2d, dropout, linear, log_softmax, max_pool2d, relu, softmax
from tinyfn.models import lenet5

KEY = jax.random.key(3)


def _normal(rng, shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


CASES = {
    # name: (f(ours), f(reference), argument shape); each f maps one array to a scalar
    "linear": (lambda x: jnp.sum(jnp.tanh(linear(x, x.T[:, :2] + 1.0))), lambda x: jnp.sum(jnp.tanh(R.linear(x, x.T[:, :2] + 1.0))), (2, 3)),
    "relu": (lambda x: jnp.sum(relu(x) ** 3), lambda x: jnp.sum(R.relu(x) ** 3), (2, 3)),
    "softmax": (lambda x: jnp.sum(softmax(x) ** 2), lambda x: jnp.sum(R.softmax(x) ** 2), (2, 3)),
    "log_softmax": (lambda x: jnp.sum(log_softmax(x, axis=0) * jnp.arange(3.0)[None, :]), lambda x: jnp.sum(R.log_softmax(x, axis=0) * jnp.arange(3.0)[None, :]), (2, 3)),
    "softmax_cross_entropy": (lambda x: losses.softmax_cross_entropy(x, jnp.array([2, 0])), lambda x: R.softmax_cross_entropy(x, jnp.array([2, 0])), (2, 3)),
    "mse": (lambda x: losses.mse(x**2, jnp.ones_like(x)), lambda x: R.mse(x**2, jnp.ones_like(x)), (2, 3)),
    "dropout": (lambda x: jnp.sum(dropout(KEY, x, 0.5, train=True) ** 3), lambda x: jnp.sum(R.dropout(KEY, x, 0.5, train=True) ** 3), (2, 3)),
    "conv2d": (lambda x: jnp.sum(conv2d(x, x[:, :, :2, :2] * 0.5) ** 2), lambda x: jnp.sum(R.conv2d(x, x[:, :, :2, :2] * 0.5) ** 2), (1, 1, 3, 3)),
    "deconv2d": (lambda x: jnp.sum(deconv2d(x, x[:, :, :2, :2] * 0.5, stride=2) ** 2), lambda x: jnp.sum(R.deconv2d(x, x[:, :, :2, :2] * 0.5, stride=2) ** 2), (1, 1, 2, 2)),
    "max_pool2d": (lambda x: jnp.sum(max_pool2d(x * x, 2) ** 2), lambda x: jnp.sum(R.max_pool2d(x * x, 2) ** 2), (1, 1, 2, 4)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hessian_through_the_handwritten_rule_equals_the_reference(name):
    ours, ref, shape = CASES[name]
    x = _normal(np.random.default_rng(0), shape) + 0.3  # random values: away from ReLU's kink and pooling ties
    np.testing.assert_allclose(jax.hessian(ours)(x), jax.hessian(ref)(x), rtol=2e-4, atol=2e-5)


def _reference_lenet(params, x):
    c1, _, _, c2, _, _, _, l1, _, l2, _, l3 = params
    h = R.max_pool2d(R.relu(R.conv2d(x, c1["w"], c1["b"], padding=2)), 2)
    h = R.max_pool2d(R.relu(R.conv2d(h, c2["w"], c2["b"])), 2)
    h = R.flatten(h)
    h = R.relu(R.linear(h, l1["w"], l1["b"]))
    h = R.relu(R.linear(h, l2["w"], l2["b"]))
    return R.linear(h, l3["w"], l3["b"])


def test_hessian_of_a_whole_lenet5_loss_equals_the_reference():
    model = lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    x = jax.random.normal(jax.random.key(1), (2, 1, 28, 28))
    labels = jnp.array([3, 7])

    def loss_of_first_bias(b, forward, loss):
        p = (dict(params[0], b=b), *params[1:])
        return loss(forward(p, x), labels)

    b0 = params[0]["b"] + 0.1
    ours = jax.hessian(partial(loss_of_first_bias, forward=model.apply, loss=losses.softmax_cross_entropy))(b0)
    theirs = jax.hessian(partial(loss_of_first_bias, forward=_reference_lenet, loss=R.softmax_cross_entropy))(b0)
    assert ours.shape == (6, 6) and np.abs(np.asarray(theirs)).max() > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4 * float(np.abs(np.asarray(theirs)).max()))
