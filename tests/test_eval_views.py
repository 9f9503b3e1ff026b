"""Test-time views: the evaluation averages class probabilities over deterministic views of the batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn.layers import BatchNorm2D, Conv2D, Flatten, Linear, ReLU, apply_with_state, init_with_state, serial
from tinyfn.losses import softmax_cross_entropy
from tinyfn.train import evaluate, make_eval_step
from tinyfn.train.augment import FLIP_VIEWS, TTA_VIEWS, identity, mirror

MODEL = serial(Conv2D(3, 3, 1, 1), BatchNorm2D(), ReLU(), Flatten(), Linear(4))


@pytest.fixture(scope="module")
def setup():
    _, params, state = init_with_state(MODEL, jax.random.key(0), (None, 1, 6, 5))
    # running statistics away from their initial values, so that evaluation mode is visible
    state = jax.tree_util.tree_map(lambda a: a + 0.3 if a.ndim == 1 else a, state)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 1, 6, 5)).astype(np.float32)
    y = rng.integers(0, 4, size=10)
    return params, state, x, y


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def test_flip_views_average_the_probabilities_of_the_images_and_their_mirrors(setup):
    params, state, x, y = setup
    plain = np.asarray(apply_with_state(MODEL, params, state, jnp.asarray(x), train=False)[0], np.float64)
    mirrored = np.asarray(
        apply_with_state(MODEL, params, state, jnp.asarray(x[..., ::-1].copy()), train=False)[0], np.float64
    )
    p = (_softmax(plain) + _softmax(mirrored)) / 2
    m = make_eval_step(MODEL, softmax_cross_entropy, views=FLIP_VIEWS)(params, state, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_array_equal(m["predictions"], p.argmax(-1))
    np.testing.assert_allclose(float(m["accuracy"]), np.mean(p.argmax(-1) == y), rtol=1e-6)
    np.testing.assert_allclose(float(m["loss"]), -np.mean(np.log(p[np.arange(len(y)), y])), rtol=1e-5)
    assert not np.allclose(
        p, _softmax(plain), atol=1e-3
    )  # the mirror view changes the answer: the test can see a missing view


def test_one_identity_view_is_the_plain_evaluation(setup):
    params, state, x, y = setup
    a = make_eval_step(MODEL, softmax_cross_entropy)(params, state, jnp.asarray(x), jnp.asarray(y))
    b = make_eval_step(MODEL, softmax_cross_entropy, views=(identity,))(params, state, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_array_equal(a["predictions"], b["predictions"])
    np.testing.assert_allclose(float(a["loss"]), float(b["loss"]), rtol=1e-6)


def test_evaluate_passes_the_views_on_and_the_named_views_exist(setup):
    params, state, x, y = setup
    loss, acc, preds = evaluate(MODEL, params, (x, y), batch_size=4, model_state=state, views=TTA_VIEWS["flip"])
    m = make_eval_step(MODEL, softmax_cross_entropy, views=FLIP_VIEWS)(params, state, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_array_equal(preds, m["predictions"])
    np.testing.assert_allclose(loss, float(m["loss"]), rtol=1e-5)
    assert TTA_VIEWS["none"] is None and TTA_VIEWS["flip"] == (identity, mirror)


def test_bad_views_are_refused_by_name(setup):
    params, state, x, y = setup
    with pytest.raises(TypeError, match=r"views must be a non-empty sequence"):
        make_eval_step(MODEL, softmax_cross_entropy, views=mirror)
    with pytest.raises(TypeError, match=r"views must be a non-empty sequence"):
        make_eval_step(MODEL, softmax_cross_entropy, views=())
    with pytest.raises(TypeError, match=r"views\[1\] must be a function x -> x, got str 'flip'"):
        make_eval_step(MODEL, softmax_cross_entropy, views=(identity, "flip"))
    step = make_eval_step(MODEL, softmax_cross_entropy, views=(identity, lambda v: v[:, :, :4]))
    with pytest.raises(
        ValueError, match=r"views\[1\] .* must keep the batch's shape \(10, 1, 6, 5\), got \(10, 1, 4, 5\)"
    ):
        step(params, state, jnp.asarray(x), jnp.asarray(y))
    with pytest.raises(ValueError, match=r"mirror: x must have rank 4"):
        mirror(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"evaluate: pass views= or eval_step=, not both"):
        evaluate(
            MODEL,
            params,
            (x, y),
            model_state=state,
            views=FLIP_VIEWS,
            eval_step=make_eval_step(MODEL, softmax_cross_entropy),
        )


def test_each_views_own_metrics_equal_a_plain_evaluation_of_that_view(setup):
    params, state, x, y = setup
    result = evaluate(MODEL, params, (x, y), batch_size=4, model_state=state, views=FLIP_VIEWS)  # batches of 4, 4 and 2
    for i, seen in enumerate((x, x[..., ::-1].copy())):
        loss, acc, _ = evaluate(MODEL, params, (seen, y), batch_size=4, model_state=state)
        np.testing.assert_allclose(result.view_loss[i], loss, rtol=1e-5)
        np.testing.assert_allclose(result.view_accuracy[i], acc, rtol=1e-6)
    assert result.view_loss[0] != result.view_loss[1]  # the two views differ: a swapped or repeated view would show
    assert evaluate(MODEL, params, (x, y), model_state=state).view_accuracy is None


def test_every_named_view_set_starts_with_the_image_itself():
    # the command line reports views[0]'s own metrics as the single-view test accuracy
    for name, views in TTA_VIEWS.items():
        assert views is None or views[0] is identity, name
