"""fit with model state (batch norm), augmentation inside the step, and optax optimizers: trained, checkpointed,
resumed."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import models
from tinyfn.data import load_embedded, normalize
from tinyfn.layers import (
    BatchNorm2D,
    Conv2D,
    Flatten,
    Linear,
    MaxPool2D,
    ReLU,
    apply_with_state,
    init_with_state,
    serial,
)
from tinyfn.losses import softmax_cross_entropy
from tinyfn.train import (
    CHECKPOINT_NAME,
    FitResult,
    StepInfo,
    adam,
    evaluate,
    fit,
    load_checkpoint,
    make_train_step,
    sgd,
)
from tinyfn.train.augment import compose, random_crop, random_flip


@pytest.fixture(scope="module")
def small_data():
    train, test = load_embedded("train"), load_embedded("test")
    x, xt = normalize(train.images[:512], 0.286, 0.353), normalize(test.images[:256], 0.286, 0.353)
    return (x, train.labels[:512]), (xt, test.labels[:256])


def _bn_model():
    return serial(Conv2D(4, 5, stride=2, use_bias=False), BatchNorm2D(), ReLU(), MaxPool2D(2), Flatten(), Linear(10))


def _bn_init():
    return init_with_state(_bn_model(), jax.random.key(0), (None, 1, 28, 28))


class Stop(KeyboardInterrupt):
    pass


def _interrupt_at(step):
    def callback(info: StepInfo):
        if info.step == step:
            raise Stop()

    return callback


def _straight_and_resumed(tmp_path, model, params, train, **kw):
    straight = fit(model, params, train, checkpoint_dir=tmp_path / "a", **kw)
    with pytest.raises(KeyboardInterrupt):
        fit(model, params, train, checkpoint_dir=tmp_path / "b", callbacks=[_interrupt_at(11)], **kw)
    resumed = fit(model, params, train, checkpoint_dir=tmp_path / "b", resume=True, **kw)
    return straight, resumed


def test_a_stateful_models_running_statistics_train_and_resume_bit_identically(small_data, tmp_path):
    train, test = small_data
    _, params, state0 = _bn_init()
    kw = dict(
        epochs=2, batch_size=64, optimizer=sgd(0.05, momentum=0.9), key=jax.random.key(5), eval_data=test, quiet=True
    )
    straight, resumed = _straight_and_resumed(tmp_path, _bn_model(), params, train, **kw)
    assert isinstance(straight, FitResult)
    params_a, history_a = straight  # unpacks as two, as fit always returned
    bn_state = straight.model_state[1]
    assert not np.allclose(bn_state["mean"], state0[1]["mean"])  # the running statistics moved during training
    chex.assert_trees_all_equal(straight.params, resumed.params)
    chex.assert_trees_all_equal(straight.model_state, resumed.model_state)
    assert history_a["eval_accuracy"] == resumed.history["eval_accuracy"]
    saved = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    chex.assert_trees_all_equal(saved.model_state, jax.device_get(straight.model_state))
    # evaluation mode reads the running statistics: evaluate equals the eval-mode forward pass by hand
    loss, acc, _ = evaluate(_bn_model(), straight.params, test, model_state=straight.model_state)
    logits, _ = apply_with_state(_bn_model(), straight.params, straight.model_state, jnp.asarray(test[0]), train=False)
    assert acc == pytest.approx(float(jnp.mean(jnp.argmax(logits, -1) == test[1])))
    assert loss == pytest.approx(float(softmax_cross_entropy(logits, jnp.asarray(test[1]))), rel=1e-5)


def test_evaluate_asks_for_the_state_of_a_stateful_model(small_data):
    _, params, _ = _bn_init()
    with pytest.raises(ValueError, match="evaluate: the model carries state.*model_state="):
        evaluate(_bn_model(), params, small_data[1])


def test_a_stateless_model_has_empty_state_and_unchanged_results(small_data):
    train, _ = small_data
    model = serial(Conv2D(4, 5, stride=2), ReLU(), Flatten(), Linear(10))
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    result = fit(model, params, train, epochs=1, batch_size=128, optimizer=sgd(0.05), key=jax.random.key(1), quiet=True)
    assert result.model_state == {}
    # the same steps by hand with the stateless step
    step = make_train_step(model, softmax_cross_entropy, sgd(0.05), donate=False)
    p, s = params, sgd(0.05).init(params)
    ekey = jax.random.fold_in(jax.random.key(1), 0)
    order = np.asarray(jax.random.permutation(ekey, 512))
    for b in range(4):
        idx = order[b * 128 : (b + 1) * 128]
        p, s, _ = step(p, s, train[0][idx], train[1][idx], jax.random.fold_in(ekey, b))
    chex.assert_trees_all_close(result.params, p, rtol=1e-6, atol=1e-7)


def test_augmentation_runs_in_the_step_from_the_step_key_and_resumes_bit_identically(small_data, tmp_path):
    train, _ = small_data
    model = serial(Conv2D(4, 5, stride=2), ReLU(), Flatten(), Linear(10))
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    augment = compose(random_crop(2), random_flip())
    kw = dict(
        epochs=2, batch_size=64, optimizer=sgd(0.05, momentum=0.9), key=jax.random.key(7), quiet=True, augment=augment
    )
    straight, resumed = _straight_and_resumed(tmp_path, model, params, train, **kw)
    chex.assert_trees_all_equal(straight.params, resumed.params)
    plain = fit(model, params, train, **dict(kw, augment=None))
    with pytest.raises(AssertionError):  # the augmentation did change what was trained on
        chex.assert_trees_all_close(straight.params, plain.params, rtol=1e-3, atol=1e-4)
    # one step by hand: the batch is augmented with the second half of split(step key)
    step_aug = make_train_step(model, softmax_cross_entropy, sgd(0.05), donate=False, augment=augment)
    step_plain = make_train_step(model, softmax_cross_entropy, sgd(0.05), donate=False)
    key = jax.random.key(3)
    model_key, augment_key = jax.random.split(key)
    x, y = train[0][:64], train[1][:64]
    s = sgd(0.05).init(params)
    a = step_aug(params, s, x, y, key)[0]
    b = step_plain(params, s, augment(augment_key, jnp.asarray(x)), y, model_key)[0]
    chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-7)


def test_make_train_step_refuses_an_augment_that_is_not_a_function():
    with pytest.raises(TypeError, match="make_train_step: augment must be a function"):
        make_train_step(_bn_model(), softmax_cross_entropy, sgd(0.1), augment=3)


@pytest.mark.parametrize("bad", [object(), 0.1, sgd])
def test_fit_refuses_an_object_that_is_no_gradient_transformation(small_data, bad):
    _, params, _ = _bn_init()
    with pytest.raises(TypeError, match="fit: optimizer must be a gradient transformation"):
        fit(
            _bn_model(),
            params,
            small_data[0],
            epochs=1,
            batch_size=64,
            optimizer=bad,
            key=jax.random.key(0),
            quiet=True,
        )


def test_an_optax_state_checkpoints_and_resumes_bit_identically(small_data, tmp_path):
    optax = pytest.importorskip("optax")
    train, _ = small_data
    model = serial(Conv2D(4, 5, stride=2), ReLU(), Flatten(), Linear(10))
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    kw = dict(
        epochs=2,
        batch_size=64,
        optimizer=optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
        key=jax.random.key(2),
        quiet=True,
    )
    straight, resumed = _straight_and_resumed(tmp_path, model, params, train, **kw)
    chex.assert_trees_all_equal(straight.params, resumed.params)
    saved = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    assert type(saved.opt_state[1][0]).__name__ == "ScaleByAdamState"  # optax's NamedTuple, saved by field name


@pytest.mark.slow
def test_fit_with_optax_adam_trains_lenet5_on_the_embedded_subset():
    optax = pytest.importorskip("optax")
    train, test = load_embedded("train"), load_embedded("test")
    x, xt = normalize(train.images, 0.286, 0.353), normalize(test.images, 0.286, 0.353)
    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    params, history = fit(
        model,
        params,
        (x, train.labels),
        epochs=3,
        batch_size=64,
        optimizer=optax.adam(1e-3),
        key=jax.random.key(1),
        eval_data=(xt, test.labels),
        quiet=True,
    )
    assert history["eval_accuracy"][-1] > 0.80


def test_tinyfn_adam_and_optax_adam_take_the_same_steps(small_data):
    optax = pytest.importorskip("optax")
    train, _ = small_data
    model = serial(Conv2D(4, 5, stride=2), ReLU(), Flatten(), Linear(10))
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    kw = dict(epochs=1, batch_size=128, key=jax.random.key(1), quiet=True)
    ours = fit(model, params, train, optimizer=adam(1e-3), **kw).params
    theirs = fit(model, params, train, optimizer=optax.adam(1e-3), **kw).params
    chex.assert_trees_all_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_a_bfloat16_adam_state_checkpoints_and_resumes_bit_identically(small_data, tmp_path):
    """optax.adam(mu_dtype=bfloat16) keeps a bf16 moment: it is saved, read back bit for bit, and the run resumes."""
    optax = pytest.importorskip("optax")
    train, _ = small_data
    model = serial(Conv2D(2, 5, stride=3), ReLU(), Flatten(), Linear(10))
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    kw = dict(
        epochs=2, batch_size=32, optimizer=optax.adam(1e-3, mu_dtype=jnp.bfloat16), key=jax.random.key(3), quiet=True
    )
    straight, resumed = _straight_and_resumed(tmp_path, model, params, (train[0][:256], train[1][:256]), **kw)
    chex.assert_trees_all_equal(straight.params, resumed.params)
    saved = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    mu = saved.opt_state[0].mu
    assert {a.dtype for a in jax.tree_util.tree_leaves(mu)} == {jnp.dtype(jnp.bfloat16)}


def test_a_bfloat16_model_trains_with_adam_like_optax_and_resumes_bit_identically(small_data, tmp_path):
    """bfloat16 params under tinyfn's adam: the loss falls as under optax.adam, and an interrupted run resumes bit
    for bit."""
    optax = pytest.importorskip("optax")
    train, _ = small_data
    model = serial(Conv2D(2, 5, stride=3), ReLU(), Flatten(), Linear(10))
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    data = (jnp.asarray(train[0][:256], jnp.bfloat16), train[1][:256])
    kw = dict(epochs=2, batch_size=32, key=jax.random.key(3), quiet=True)
    straight, resumed = _straight_and_resumed(tmp_path, model, params, data, optimizer=adam(1e-2), **kw)
    chex.assert_trees_all_equal(straight.params, resumed.params)
    assert {a.dtype for a in jax.tree_util.tree_leaves(straight.params)} == {jnp.dtype(jnp.bfloat16)}
    saved = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    chex.assert_trees_all_equal(saved.params, jax.device_get(straight.params))
    peer = fit(model, params, data, optimizer=optax.adam(1e-2), **kw)
    ours, theirs = straight.history["train_loss"], peer.history["train_loss"]
    assert ours[-1] < 0.8 * ours[0] and theirs[-1] < 0.8 * theirs[0]  # both learn (before the fix: no move at all)
    np.testing.assert_allclose(ours, theirs, rtol=0.05)  # and alike: bf16 rounding is the only difference


def test_fit_trains_a_bf16_resnet_with_float32_batch_norm_statistics(small_data, tmp_path):
    from tinyfn.train import load_model

    (x, y), _ = small_data
    model = models.resnet(10, compute_dtype=jnp.bfloat16, width=4, blocks_per_stage=1, stages=1)
    _, params, state = init_with_state(model, jax.random.key(0), (None, 1, 28, 28))
    result = fit(
        model,
        params,
        (x[:64], y[:64]),
        epochs=1,
        batch_size=32,
        optimizer=adam(1e-3),
        key=jax.random.key(1),
        quiet=True,
        checkpoint_dir=tmp_path,
    )
    assert np.isfinite(result.history["train_loss"][0])
    assert {a.dtype for a in jax.tree.leaves(result.model_state)} == {jnp.dtype(jnp.float32)}  # statistics float32
    assert {a.dtype for a in jax.tree.leaves(result.params)} == {jnp.dtype(jnp.float32)}
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(result.model_state), jax.tree.leaves(state))]
    assert all(moved)  # every running statistic was updated from the bf16 activations
    loaded = load_model(tmp_path)  # rebuilt computing in bf16 again, its state float32
    assert "bfloat16" in str(loaded.metadata["model"]["spec"]) and loaded.model_state is not None


def test_an_epoch_schedule_trains_each_stage_at_its_size_and_resumes_across_the_change_bit_identically(
    small_data, tmp_path
):
    from tinyfn.layers import GlobalAvgPool2D
    from tinyfn.train.augment import by_epoch, resize

    train, _ = small_data
    model = serial(Conv2D(4, 3, stride=2), ReLU(), GlobalAvgPool2D(), Linear(10))  # takes any image size
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    sizes = []

    def seen(size):  # resize(size), recording the shape it is traced with
        def scale(key, x):
            sizes.append(x.shape[-1])
            return resize(size)(key, x)

        return scale

    kw = dict(epochs=2, batch_size=64, optimizer=sgd(0.05, momentum=0.9), key=jax.random.key(7), quiet=True)
    staged = by_epoch({0: seen(14), 1: None})
    straight, resumed = _straight_and_resumed(tmp_path, model, params, train, augment=staged, **kw)
    chex.assert_trees_all_equal(straight.params, resumed.params)  # interrupted in epoch 2, after the change
    assert sizes == [28, 28]  # one trace of the small stage per fit that trained epoch 1 (the resumed one did not)
    # the same as epoch 1 with resize(14), then epoch 2 resumed from its checkpoint without augmentation
    fit(model, params, train, **dict(kw, epochs=1), augment=resize(14), checkpoint_dir=tmp_path / "c")
    by_hand = fit(model, params, train, **kw, augment=None, checkpoint_dir=tmp_path / "c", resume=True)
    chex.assert_trees_all_equal(by_hand.params, straight.params)
    all_small = fit(model, params, train, **kw, augment=resize(14))
    with pytest.raises(AssertionError):  # the second stage did train at full size
        chex.assert_trees_all_close(all_small.params, straight.params, rtol=1e-3, atol=1e-4)
