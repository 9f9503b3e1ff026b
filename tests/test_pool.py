"""Max-pooling with switches and max-unpooling."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from strategies import distinct, pool_configs

from tinyfn import gradcheck, reference as R
from tinyfn.layers import FORMULATIONS, max_pool2d, max_pool2d_with_switches, max_unpool2d


def test_switches_hold_flat_indices_of_the_maxima_worked_by_hand():
    x = np.array([[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 8.0, 1.0], [0.0, 2.0, 1.0, 1.0], [9.0, 1.0, 0.5, 7.0]], np.float32)
    y, switches = max_pool2d_with_switches(x[None, None], 2)
    np.testing.assert_array_equal(np.asarray(y)[0, 0], [[5.0, 8.0], [9.0, 7.0]])
    # (h, w) of each maximum -> h * W + w with W = 4
    np.testing.assert_array_equal(np.asarray(switches)[0, 0], [[0 * 4 + 1, 1 * 4 + 2], [3 * 4 + 0, 3 * 4 + 3]])
    assert switches.dtype == jnp.int32


def test_ties_go_to_the_first_maximum_in_row_major_window_order():
    x = np.zeros((1, 1, 4, 4), np.float32)  # every window is a four-way tie
    x[0, 0, 3, 3] = -1.0
    _, switches = max_pool2d_with_switches(x, 2)
    np.testing.assert_array_equal(np.asarray(switches)[0, 0], [[0, 2], [8, 10]])
    dx = jax.grad(lambda x: max_pool2d(x, 2).sum())(jnp.asarray(x))
    expected = np.zeros((4, 4), np.float32)
    expected[[0, 0, 2, 2], [0, 2, 0, 2]] = 1.0
    np.testing.assert_array_equal(np.asarray(dx)[0, 0], expected)


def test_nan_propagates_like_pytorch():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = np.asarray(max_pool2d(x, 2))
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])


def test_padding_never_wins_and_switches_refer_to_the_unpadded_plane():
    x = -np.ones((1, 1, 3, 3), np.float32) - np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    y, switches = max_pool2d_with_switches(x, 3, stride=2, padding=1)
    np.testing.assert_array_equal(np.asarray(y)[0, 0], [[-1.0, -2.0], [-4.0, -5.0]])
    np.testing.assert_array_equal(np.asarray(switches)[0, 0], [[0, 1], [3, 4]])


def test_unpooling_puts_values_back_at_their_switches_and_zeros_elsewhere():
    y = np.array([[[[10.0, 20.0], [30.0, 40.0]]]], np.float32)
    switches = np.array([[[[1, 6], [12, 15]]]], np.int32)
    z = np.asarray(max_unpool2d(y, switches, (4, 4)))[0, 0]
    expected = np.zeros(16, np.float32)
    expected[[1, 6, 12, 15]] = [10.0, 20.0, 30.0, 40.0]
    np.testing.assert_array_equal(z, expected.reshape(4, 4))
    assert max_unpool2d(y, switches, (1, 1, 4, 4)).shape == (1, 1, 4, 4)


def test_overlapping_windows_sum_in_unpooling_so_it_is_the_transpose_of_pooling(rng):
    x = jnp.asarray(distinct(rng, (2, 2, 6, 5)))
    y, switches = max_pool2d_with_switches(x, 3, stride=1)
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    # <pool(x'), g> == <x', unpool(g)> for the routing fixed by the switches: unpool(g) is pooling's gradient
    dx = jax.vjp(lambda x: max_pool2d(x, 3, stride=1), x)[1](g)[0]
    np.testing.assert_allclose(max_unpool2d(g, switches, x.shape), dx, rtol=1e-6)
    # and a position that several windows chose really receives the sum of their values
    counts = np.bincount(np.asarray(switches).reshape(4, -1)[0], minlength=30)
    assert counts.max() > 1
    flat = np.asarray(max_unpool2d(jnp.ones_like(g), switches, x.shape)).reshape(4, -1)[0]
    np.testing.assert_array_equal(flat, counts)


@given(pool_configs())
def test_max_pool_forward_switches_and_handwritten_vjp_match_references(cfg):
    rng = np.random.default_rng(5)
    x = jnp.asarray(distinct(rng, cfg["x_shape"]))
    kw = dict(window=cfg["window"], stride=cfg["stride"], padding=cfg["padding"])
    (y, switches), (y_ref, sw_ref), y_plain = jax.jit(
        lambda x: (max_pool2d_with_switches(x, **kw), R.max_pool2d_with_switches(x, **kw), R.max_pool2d(x, **kw))
    )(x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(switches, sw_ref)
    np.testing.assert_array_equal(y, y_plain)
    gradcheck.check_vjp(partial(max_pool2d, **kw), (x,), reference=partial(R.max_pool2d, **kw))
    gradcheck.check_vjp(
        partial(max_pool2d_with_switches, **kw), (x,), reference=partial(R.max_pool2d_with_switches, **kw)
    )
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    unpool = lambda g: max_unpool2d(g, switches, x.shape[2:])  # noqa: E731
    np.testing.assert_allclose(
        *jax.jit(lambda g: (unpool(g), R.max_unpool2d(g, switches, x.shape[2:])))(g), rtol=1e-6, atol=1e-6
    )
    gradcheck.check_vjp(unpool, (g,), reference=lambda g: R.max_unpool2d(g, switches, x.shape[2:]))


@pytest.mark.parametrize("name", FORMULATIONS)
@pytest.mark.parametrize("hw, window", [((5, 5), 2), ((5, 7), (2, 3)), ((7, 4), (3, 2))])
def test_tiled_windows_with_a_remainder_route_the_gradient_to_the_covered_rows(name, hw, window):
    # 5 rows and windows of 2: rows 0-3 are pooled, row 4 is in no window and gets no gradient
    rng = np.random.default_rng(8)
    x = jnp.asarray(distinct(rng, (2, 2, *hw)))
    y, vjp = jax.vjp(partial(max_pool2d, window=window, formulation=name), x)
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    dx = np.asarray(vjp(g)[0])
    expected = jax.vjp(partial(R.max_pool2d, window=window), x)[1](g)[0]
    np.testing.assert_array_equal(dx, expected)
    kh, kw = (window, window) if isinstance(window, int) else window
    covered_h, covered_w = hw[0] // kh * kh, hw[1] // kw * kw
    assert not dx[:, :, covered_h:].any() and not dx[:, :, :, covered_w:].any()
    # every window sends its g to exactly one input inside it
    np.testing.assert_allclose(
        dx[:, :, :covered_h, :covered_w].reshape(2, 2, y.shape[2], kh, y.shape[3], kw).sum((3, 5)), g, rtol=1e-6
    )


def test_negative_switches_are_dropped_not_counted_from_the_end():
    y = jnp.array([[[[10.0, 20.0]]]])
    switches = jnp.array([[[[-1, 2]]]], jnp.int32)
    z = max_unpool2d(y, switches, (2, 2))
    np.testing.assert_array_equal(np.asarray(z).ravel(), [0.0, 0.0, 20.0, 0.0])
    np.testing.assert_array_equal(np.asarray(z), np.asarray(R.max_unpool2d(y, switches, (2, 2))))
    # the backward gathers nothing for the dropped switch either
    c = jnp.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    dy = jax.grad(lambda y: jnp.vdot(max_unpool2d(y, switches, (2, 2)), c))(y)
    np.testing.assert_array_equal(np.asarray(dy).ravel(), [0.0, 3.0])


@pytest.mark.parametrize("name", FORMULATIONS)
def test_in_an_all_minus_inf_window_the_first_real_input_wins_over_the_padding(name):
    x = np.full((1, 1, 2, 2), -np.inf, np.float32)
    y, switches = max_pool2d_with_switches(x, 3, stride=1, padding=1, formulation=name)
    np.testing.assert_array_equal(np.asarray(switches).ravel(), [0, 0, 0, 0])  # as PyTorch
    np.testing.assert_array_equal(np.asarray(y).ravel(), [-np.inf] * 4)
    # so the gradient and unpooling land on real inputs, all four on the first
    g = jnp.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    dx = jax.vjp(partial(max_pool2d, window=3, stride=1, padding=1, formulation=name), jnp.asarray(x))[1](g)[0]
    np.testing.assert_array_equal(np.asarray(dx).ravel(), [10.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(max_unpool2d(g, switches, (2, 2))), np.asarray(dx))
    # one real finite value among -inf: it wins every window that holds it
    x[0, 0, 1, 1] = -5.0
    _, switches = max_pool2d_with_switches(x, 3, stride=1, padding=1, formulation=name)
    np.testing.assert_array_equal(np.asarray(switches).ravel(), [3, 3, 3, 3])
