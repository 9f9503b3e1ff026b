"""Initialisers draw exactly what ``jax.random`` draws for the same key and shape, however the draw is bucketed."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import initializers

SHAPES = [(), (0, 3), (5,), (24, 1, 4, 4), (96, 96, 3, 3), (3, 2**17 + 1)]  # the last one past the smallest bucket


def _keys():
    return {"typed": jax.random.key(7), "raw": jax.random.PRNGKey(7)}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["typed", "raw"])
def test_normal_and_uniform_initialisers_equal_jax_random_bit_for_bit(shape, kind):
    key = _keys()[kind]
    assert initializers._prefix_consistent(key)  # so the bucketed draw is the one compared
    fan_in = max(math.prod(shape[1:]), 1)
    np.testing.assert_array_equal(
        initializers.he_normal(key, shape, fan_in, 1), math.sqrt(2.0 / fan_in) * jax.random.normal(key, shape)
    )
    a = math.sqrt(6.0 / fan_in)
    np.testing.assert_array_equal(
        initializers.he_uniform(key, shape, fan_in, 1), jax.random.uniform(key, shape, jnp.float32, -a, a)
    )


def test_layers_of_different_shapes_share_one_compiled_draw():
    before = initializers._draw._cache_size()
    key = jax.random.key(3)
    for shape in [
        (7, 3, 3, 3),
        (11, 5),
        (13, 2, 1, 1),
    ]:  # shapes no other test draws: only the bucket's draw may compile
        initializers.lecun_normal(key, shape, 9, 1)
    assert initializers._draw._cache_size() - before <= 1
    assert initializers._draw._cache_size() >= 1


def test_traced_keys_and_non_partitionable_threefry_draw_directly():
    key = jax.random.key(1)
    traced = jax.jit(lambda k: initializers.he_normal(k, (4, 6), 6, 4))(key)
    np.testing.assert_array_equal(
        traced, jax.jit(lambda k: math.sqrt(2.0 / 6) * jax.random.normal(k, (4, 6)))(key)
    )  # both compiled: same rounding
    assert not initializers._prefix_consistent(jax.random.key(0, impl="rbg"))
    with jax.threefry_partitionable(False):
        assert not initializers._prefix_consistent(key)
        np.testing.assert_array_equal(
            initializers.glorot_uniform(key, (4, 6), 6, 4),
            jax.random.uniform(key, (4, 6), jnp.float32, -math.sqrt(0.6), math.sqrt(0.6)),
        )
