"""linear: the seed's laws on a worked example, and the handwritten rule against references."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, strategies as st

from tinyfn import gradcheck, reference as R
from tinyfn.layers import linear


def test_two_two_two_network_worked_by_hand():
    # 2 inputs -> 2 hidden -> 2 outputs, every number small enough to check on paper.
    x = np.array([[1.0, 2.0]], np.float32)
    w1, b1 = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32), np.array([0.5, -1.0], np.float32)
    w2, b2 = np.array([[2.0, 0.0], [1.0, -1.0]], np.float32), np.array([0.0, 1.0], np.float32)
    h = linear(x, w1, b1)  # [1 + 1 + 0.5, -1 + 4 - 1] = [2.5, 2]
    np.testing.assert_array_equal(np.asarray(h), [[2.5, 2.0]])
    y = linear(h, w2, b2)  # [5 + 2, 0 - 2 + 1] = [7, -1]
    np.testing.assert_array_equal(np.asarray(y), [[7.0, -1.0]])
    # L = sum(y): g = [1, 1]; dh = g w2ᵀ = [2, 0]; dw2 = hᵀ g; dw1 = xᵀ dh; dx = dh w1ᵀ
    grads = jax.grad(lambda x, w1, w2: linear(linear(x, w1, b1), w2, b2).sum(), argnums=(0, 1, 2))(x, w1, w2)
    np.testing.assert_array_equal(np.asarray(grads[2]), [[2.5, 2.5], [2.0, 2.0]])
    np.testing.assert_array_equal(np.asarray(grads[1]), [[2.0, 0.0], [4.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(grads[0]), [[2.0, 1.0]])


@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6))
def test_handwritten_vjp_matches_autodiff_and_finite_differences(n, i, o):
    rng = np.random.default_rng(n * 100 + i * 10 + o)
    args = tuple(jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((n, i), (i, o), (o,)))
    np.testing.assert_allclose(linear(*args), R.linear(*args), rtol=1e-6, atol=1e-6)
    gradcheck.check_vjp(linear, args, reference=R.linear, argnames=("x", "w", "b"))


def test_leading_batch_dimensions_and_no_bias(rng):
    x, w = (
        jnp.asarray(rng.standard_normal((2, 3, 4)), jnp.float32),
        jnp.asarray(rng.standard_normal((4, 5)), jnp.float32),
    )
    np.testing.assert_allclose(linear(x, w), np.asarray(x) @ np.asarray(w), rtol=1e-5)
    gradcheck.check_vjp(linear, (x, w), reference=R.linear)
