"""Forward-over-reverse (``jax.hessian``) runs through whole models' handwritten rules and equals the reference's.

Each op on its own: ``tests/test_op_hessians.py`` (over ``tinyfn.registry.OPS``).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn import layers as L, losses, reference as R
from tinyfn.models import lenet5


def _small_resnet_loss(ops, sce, x, params, labels):
    """A residual block (conv, batch norm, relu, conv, batch norm, sum, relu), a concat with its average pool,
    batch norm with given statistics, global average pooling, linear, cross-entropy: written once for both
    ``tinyfn``'s ops and ``tinyfn.reference``'s."""
    p = params
    h = ops.relu(ops.batch_norm(ops.conv2d(x, p["stem"], padding=1), p["g0"], p["b0"]))
    r = ops.relu(ops.batch_norm(ops.conv2d(h, p["c1"], padding=1), p["g1"], p["b1"]))
    r = ops.batch_norm(ops.conv2d(r, p["c2"], padding=1), p["g2"], p["b2"])
    h = ops.relu(ops.add_arrays((h, r)))
    h = ops.concat_arrays((h, ops.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=False)))
    h = ops.batch_norm_inference(h, p["mean"], p["var"], p["g3"], p["b3"])
    return sce(ops.linear(ops.global_avg_pool2d(h), p["w"], p["b"]), labels)


def _small_resnet_params(rng):
    n = lambda *shape: jnp.asarray(rng.standard_normal(shape))
    return {
        "stem": n(2, 1, 3, 3),
        "g0": n(2),
        "b0": n(2),
        "c1": n(2, 2, 3, 3) * 0.5,
        "g1": n(2),
        "b1": n(2),
        "c2": n(2, 2, 3, 3) * 0.5,
        "g2": n(2),
        "b2": n(2),
        "mean": n(4),
        "var": jnp.asarray(rng.uniform(0.5, 2, 4)),
        "g3": n(4),
        "b3": n(4),
        "w": n(4, 3),
        "b": n(3),
    }


def test_hessian_of_a_small_resnet_loss_equals_the_reference_in_float64():
    """Forward over reverse through every rule of a ResNet (and the five rules whose fwd once called themselves)."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x, params, labels = jnp.asarray(rng.standard_normal((2, 1, 4, 4))), _small_resnet_params(rng), jnp.array([2, 0])

        def loss_of(ops, sce):
            return lambda x_part: _small_resnet_loss(ops, sce, x.at[0, 0, 1].set(x_part), params, labels)

        ours, theirs = loss_of(L, losses.softmax_cross_entropy), loss_of(R, R.softmax_cross_entropy)
        x_part = x[0, 0, 1]  # one image row: a (4, 4) hessian
        hessian = jax.jit(lambda v: (jax.hessian(ours)(v), jax.jacfwd(jax.grad(ours))(v), jax.hessian(theirs)(v)))
        h_ours, h_jacfwd, h_ref = hessian(x_part)
    assert h_ref.shape == (4, 4) and np.abs(np.asarray(h_ref)).max() > 1e-3
    np.testing.assert_allclose(h_ours, h_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(h_jacfwd, h_ref, rtol=1e-9, atol=1e-12)


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
