"""relu, softmax, log_softmax, dropout, flatten and the losses."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from strategies import off_kink

from tinyfn import gradcheck, losses, reference as R
from tinyfn.layers import dropout, flatten, log_softmax, relu, softmax


def test_relu_rule_passes_gradient_only_where_the_input_is_positive():
    x = jnp.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(relu(x), [0.0, 0.0, 0.0, 0.5, 3.0])
    g = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(jax.vjp(relu, x)[1](g)[0], [0.0, 0.0, 0.0, 4.0, 5.0])


def test_relu_matches_references(rng):
    x = jnp.asarray(off_kink(rng, (3, 4, 5)))
    gradcheck.check_vjp(relu, (x,), reference=R.relu)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_and_log_softmax_match_references(rng, axis):
    x = jnp.asarray(rng.standard_normal((3, 4, 2)) * 3, jnp.float32)
    np.testing.assert_allclose(softmax(x, axis), R.softmax(x, axis), rtol=1e-6)
    np.testing.assert_allclose(log_softmax(x, axis), R.log_softmax(x, axis), rtol=1e-6, atol=1e-6)
    gradcheck.check_vjp(partial(softmax, axis=axis), (x,), reference=partial(R.softmax, axis=axis))
    gradcheck.check_vjp(partial(log_softmax, axis=axis), (x,), reference=partial(R.log_softmax, axis=axis))


def test_log_softmax_is_stable_for_huge_logits():
    x = jnp.array([[1000.0, 0.0, -1000.0]])
    np.testing.assert_allclose(log_softmax(x), [[0.0, -1000.0, -2000.0]])
    np.testing.assert_allclose(softmax(x), [[1.0, 0.0, 0.0]])
    assert np.isfinite(losses.softmax_cross_entropy(x, jnp.array([2]))).all()


def test_softmax_cross_entropy_known_value_and_rule():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    labels = jnp.array([0, 2])
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, labels), -(np.log(0.5) + np.log(0.8)) / 2, rtol=1e-6
    )
    g = jax.grad(losses.softmax_cross_entropy)(logits, labels)  # (softmax - onehot) / N
    np.testing.assert_allclose(g, np.array([[-0.5, 0.25, 0.25], [0.1, 0.1, -0.2]]) / 2, rtol=1e-5, atol=1e-7)


def test_label_smoothing_known_value_and_rule():
    # q = (1 - ε) onehot + ε/K; loss = -Σ q log p, gradient (p - q)/N
    eps, p = 0.3, np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    logits, labels = jnp.log(jnp.asarray(p, jnp.float32)), jnp.array([0, 2])
    q = (1 - eps) * np.eye(3)[[0, 2]] + eps / 3
    loss = losses.softmax_cross_entropy(logits, labels, label_smoothing=eps)
    np.testing.assert_allclose(loss, -(q * np.log(p)).sum(1).mean(), rtol=1e-6)
    g = jax.grad(lambda z: losses.softmax_cross_entropy(z, labels, label_smoothing=eps))(logits)
    np.testing.assert_allclose(g, (p - q) / 2, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"label_smoothing must be a float in \[0, 1\), got 1.0"):
        losses.softmax_cross_entropy(logits, labels, label_smoothing=1.0)


def test_label_smoothing_rule_matches_reference_and_finite_differences(rng):
    with jax.enable_x64(True):
        logits = jnp.asarray(rng.standard_normal((5, 4)))
        labels = jnp.asarray(rng.integers(0, 4, 5), jnp.int32)
        gradcheck.check_vjp(
            lambda z: losses.softmax_cross_entropy(z, labels, label_smoothing=0.15),
            (logits,),
            reference=lambda z: R.softmax_cross_entropy(z, labels, label_smoothing=0.15),
        )


def test_losses_match_references(rng):
    logits = jnp.asarray(rng.standard_normal((6, 4)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 4, 6), jnp.int32)
    sce = lambda z: losses.softmax_cross_entropy(z, labels)  # noqa: E731
    gradcheck.check_vjp(sce, (logits,), reference=lambda z: R.softmax_cross_entropy(z, labels))
    p, t = (jnp.asarray(rng.standard_normal((3, 5)), jnp.float32) for _ in range(2))
    np.testing.assert_allclose(losses.mse(p, t), np.mean((np.asarray(p) - np.asarray(t)) ** 2), rtol=1e-6)
    gradcheck.check_vjp(losses.mse, (p, t), reference=R.mse)


def test_dropout_rate_is_the_drop_probability_and_eval_is_identity(key):
    x = jnp.ones((200, 100))
    y = dropout(key, x, 0.3, train=True)
    dropped = float(jnp.mean(y == 0))
    assert abs(dropped - 0.3) < 0.02  # 20,000 draws: std 0.003
    np.testing.assert_allclose(np.asarray(y)[np.asarray(y) != 0], 1 / 0.7, rtol=1e-6)
    assert dropout(key, x, 0.3, train=False) is not None
    np.testing.assert_array_equal(dropout(key, x, 0.3, train=False), x)
    np.testing.assert_array_equal(dropout(key, x, 1.0, train=True), 0.0)


def test_dropout_gradient_uses_the_same_mask(key, rng):
    x = jnp.asarray(rng.standard_normal((4, 6)), jnp.float32)
    f = lambda x: dropout(key, x, 0.5, train=True)  # noqa: E731
    gradcheck.check_vjp(f, (x,), reference=lambda x: R.dropout(key, x, 0.5, train=True))
    g = jax.grad(lambda x: f(x).sum())(x)
    np.testing.assert_array_equal(np.asarray(g) != 0, np.asarray(f(x)) != 0)


def test_flatten_keeps_the_batch_dimension():
    x = jnp.arange(24.0).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(flatten(x), np.arange(24.0).reshape(2, 12))


@pytest.mark.parametrize("bad", [3, -1])
def test_a_label_out_of_range_under_jit_gives_a_nan_loss_and_a_nan_gradient(bad):
    logits = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    labels = jnp.array([0, bad])
    loss, grad = jax.jit(jax.value_and_grad(losses.softmax_cross_entropy))(logits, labels)
    assert np.isnan(loss)
    assert np.isnan(np.asarray(grad[1])).all()  # the invalid example's row
    ok_loss, ok_grad = jax.value_and_grad(losses.softmax_cross_entropy)(logits[:1], labels[:1])
    np.testing.assert_allclose(grad[0], ok_grad[0] / 2, rtol=1e-6)  # the valid row is as before (mean over 2)


def test_checkify_reports_the_first_label_out_of_range_under_jit():
    from jax.experimental import checkify

    f = jax.jit(lambda z, y: losses.softmax_cross_entropy(z, y, check_labels=True))
    err, _ = checkify.checkify(f)(jnp.zeros((3, 4)), jnp.array([1, 4, -2]))
    with pytest.raises(checkify.JaxRuntimeError, match=r"softmax_cross_entropy: labels\[1\] = 4 is outside \[0, 4\)"):
        err.throw()
    err, _ = checkify.checkify(f)(jnp.zeros((3, 4)), jnp.array([1, 3, 0]))
    assert err.get() is None


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: losses.softmax_cross_entropy(jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32)),
            r"^softmax_cross_entropy: the batch is empty",
        ),
        (lambda: losses.mse(jnp.zeros((0, 3)), jnp.zeros((0, 3))), r"^mse: the batch is empty"),
        (lambda: jax.jit(losses.mse).lower(jnp.zeros((0,)), jnp.zeros((0,))), r"^mse: the batch is empty"),
    ],
)
def test_losses_refuse_an_empty_batch(call, match):
    with pytest.raises(ValueError, match=match):
        call()
