"""Augmentations: reproducible from the key, shape- and dtype-preserving, jit-compatible, and doing what they say."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn.train.augment import compose, random_crop, random_flip

X = jnp.arange(6 * 1 * 5 * 4, dtype=jnp.float32).reshape(6, 1, 5, 4)


@pytest.mark.parametrize("augment", [random_flip(), random_crop(2), compose(random_crop(1), random_flip())])
def test_same_key_same_batch_other_key_other_batch_and_shape_kept(augment):
    jitted = jax.jit(augment)
    a, b = jitted(jax.random.key(0), X), jitted(jax.random.key(0), X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, augment(jax.random.key(0), X))  # jit and eager agree
    assert a.shape == X.shape and a.dtype == X.dtype
    assert any(not np.array_equal(a, jitted(jax.random.key(k), X)) for k in range(1, 4))


def test_flip_mirrors_whole_images_or_leaves_them():
    y = np.asarray(random_flip()(jax.random.key(1), X))
    flipped = [np.array_equal(y[i], np.asarray(X[i])[..., ::-1]) for i in range(6)]
    kept = [np.array_equal(y[i], np.asarray(X[i])) for i in range(6)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    np.testing.assert_array_equal(random_flip(1.0)(jax.random.key(0), X), X[..., ::-1])


def test_crop_is_a_shift_within_the_padding_filled_with_zeros():
    y = np.asarray(random_crop(2)(jax.random.key(3), X + 1))  # +1: no zero inside the image
    for img, src in zip(y, np.asarray(X + 1)):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                padded = np.pad(src, ((0, 0), (2, 2), (2, 2)))
                if np.array_equal(img, padded[:, 2 + dy : 2 + dy + 5, 2 + dx : 2 + dx + 4]):
                    found = True
        assert found


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"random_crop: x must have rank 4"):
        random_crop(1)(jax.random.key(0), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="random_crop: padding must be a positive int"):
        random_crop(0)
    with pytest.raises(TypeError, match="compose: argument 0 must be a function"):
        compose(3)
