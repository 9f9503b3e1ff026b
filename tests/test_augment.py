"""Augmentations: reproducible from the key, shape- and dtype-preserving, jit-compatible, and doing what they say."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn.train.augment import by_epoch, compose, random_crop, random_flip, resize

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


def test_resize_matches_pytorchs_antialiased_bilinear_and_ignores_the_key():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((3, 2, 28, 28)).astype(np.float32)
    for size in (16, 22, 7, 40):  # shrinking (antialiased) and enlarging
        ours = jax.jit(resize(size))(jax.random.key(0), x)
        theirs = torch.nn.functional.interpolate(
            torch.from_numpy(x), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        ).numpy()
        assert ours.shape == (3, 2, size, size) and ours.dtype == jnp.float32
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(ours, resize(size)(jax.random.key(9), x))  # deterministic
    np.testing.assert_array_equal(resize(28)(jax.random.key(0), x), x)  # its own size: the batch as it is
    with pytest.raises(ValueError, match="resize: size must be a positive int"):
        resize(0)


def test_by_epoch_takes_each_stage_from_its_first_epoch_until_the_next():
    small, full = resize(3), random_flip()
    schedule = by_epoch({4: full, 0: small, 6: None})
    assert schedule.starts == (0, 4, 6)
    assert [schedule.stage(e) for e in range(8)] == [0, 0, 0, 0, 1, 1, 2, 2]
    assert schedule.at(3) is small and schedule.at(5) is full and schedule.at(100) is None
    with pytest.raises(ValueError, match=r"by_epoch: the first stage must start at epoch 0, got starts \[2\]"):
        by_epoch({2: small})
    with pytest.raises(ValueError, match="by_epoch: each first epoch must be a non-negative integer, got -1"):
        by_epoch({0: small, -1: full})
    with pytest.raises(TypeError, match="by_epoch: the augmentation from epoch 3 must be a function"):
        by_epoch({0: small, 3: "flip"})
    with pytest.raises(TypeError, match="by_epoch: stages must be a non-empty dict"):
        by_epoch([small])
