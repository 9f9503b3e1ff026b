"""The fit loop: it learns, a key reproduces a run, resume is bit-identical, NaN stops with the last good params."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn.data import load_embedded, normalize
from tinyfn.layers import Conv2D, Flatten, Linear, MaxPool2D, ReLU, serial
from tinyfn.train import (
    CHECKPOINT_NAME,
    ConsoleLog,
    EpochSummary,
    StepInfo,
    fit,
    load_checkpoint,
    loop as loop_module,
    sgd,
)


@pytest.fixture(scope="module")
def small_data():
    train, test = load_embedded("train"), load_embedded("test")
    x, xt = normalize(train.images[:1024], 0.286, 0.353), normalize(test.images[:500], 0.286, 0.353)
    return (x, train.labels[:1024]), (xt, test.labels[:500])


def _model():
    return serial(Conv2D(4, 5, stride=2), ReLU(), MaxPool2D(2), Flatten(), Linear(10))


def _init():
    return _model().init(jax.random.key(0), (None, 1, 28, 28))[1]


def test_fit_learns_and_reports_history(small_data):
    train, test = small_data
    params, history = fit(
        _model(),
        _init(),
        train,
        epochs=3,
        batch_size=64,
        optimizer=sgd(0.05, momentum=0.9),
        key=jax.random.key(1),
        eval_data=test,
        quiet=True,
    )
    assert history["epoch"] == [1, 2, 3]
    assert history["train_loss"][-1] < 0.8 < history["train_loss"][0] + 1.0  # chance level is log 10 = 2.3
    assert history["eval_accuracy"][-1] > 0.7
    assert all(v > 0 for v in history["images_per_second"]) and history["wall_time"] == sorted(history["wall_time"])


def test_a_smoothed_training_loss_is_reported_as_the_plain_loss_on_eval_data(small_data):
    from functools import partial

    from tinyfn.losses import softmax_cross_entropy
    from tinyfn.train import evaluate

    train, test = small_data
    smoothed = partial(softmax_cross_entropy, label_smoothing=0.2)
    kw = dict(
        epochs=1,
        batch_size=128,
        optimizer=sgd(0.05),
        key=jax.random.key(2),
        eval_data=test,
        quiet=True,
        loss_fn=smoothed,
    )
    params, history = fit(_model(), _init(), train, eval_loss_fn=softmax_cross_entropy, **kw)
    plain_loss, _, _ = evaluate(_model(), params, test)
    smoothed_loss, _, _ = evaluate(_model(), params, test, loss_fn=smoothed)
    np.testing.assert_allclose(history["eval_loss"][-1], plain_loss, rtol=1e-5)
    assert abs(smoothed_loss - plain_loss) > 1e-2  # the two losses differ, so the check above tells them apart
    _, default = fit(_model(), _init(), train, **kw)
    np.testing.assert_allclose(default["eval_loss"][-1], smoothed_loss, rtol=1e-5)  # without eval_loss_fn: loss_fn


def test_the_key_reproduces_a_run_exactly(small_data):
    train, _ = small_data
    run = lambda k: fit(
        _model(), _init(), train, epochs=1, batch_size=128, optimizer=sgd(0.05), key=jax.random.key(k), quiet=True
    )[0]  # noqa: E731
    a, b, c = run(3), run(3), run(4)
    chex.assert_trees_all_equal(a, b)
    with pytest.raises(AssertionError):
        chex.assert_trees_all_equal(a, c)


class Stop(KeyboardInterrupt):
    pass


def test_resume_after_ctrl_c_is_bit_identical(small_data, tmp_path):
    train, test = small_data
    kw = dict(
        epochs=2,
        batch_size=64,
        optimizer=sgd(0.05, momentum=0.9, nesterov=True),
        key=jax.random.key(5),
        eval_data=test,
        quiet=True,
    )
    straight, hist_straight = fit(_model(), _init(), train, checkpoint_dir=tmp_path / "a", **kw)

    def interrupt(info: StepInfo):
        if info.step == 21:  # in the middle of the second epoch (16 steps per epoch)
            raise Stop()

    with pytest.raises(KeyboardInterrupt):
        fit(_model(), _init(), train, checkpoint_dir=tmp_path / "b", callbacks=[interrupt], **kw)
    saved = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert saved.metadata["position"]["epoch"] == 1 and saved.metadata["position"]["batch"] == 6
    resumed, hist_resumed = fit(_model(), _init(), train, checkpoint_dir=tmp_path / "b", resume=True, **kw)
    chex.assert_trees_all_equal(straight, resumed)
    for k in ("train_loss", "train_accuracy", "eval_loss", "eval_accuracy"):
        assert hist_straight[k] == hist_resumed[k], k


def test_resume_refuses_another_seed(small_data, tmp_path):
    train, _ = small_data
    kw = dict(epochs=1, batch_size=256, optimizer=sgd(0.05), quiet=True, checkpoint_dir=tmp_path)
    fit(_model(), _init(), train, key=jax.random.key(0), **kw)
    with pytest.raises(ValueError, match="another key"):
        fit(_model(), _init(), train, key=jax.random.key(1), resume=True, **kw)


def test_nan_loss_stops_with_the_step_and_saves_the_last_finite_params(small_data, tmp_path):
    train, _ = small_data
    with pytest.raises(FloatingPointError, match=r"loss became (nan|inf) at epoch 1, step \d+ of 16") as err:
        fit(
            _model(),
            _init(),
            train,
            epochs=2,
            batch_size=64,
            optimizer=sgd(1e8),
            key=jax.random.key(0),
            checkpoint_dir=tmp_path,
            quiet=True,
        )
    assert str(tmp_path) in str(err.value)
    saved = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert all(np.isfinite(a).all() for a in jax.tree_util.tree_leaves(saved.params))


def test_bad_arguments(small_data):
    train, _ = small_data
    with pytest.raises(ValueError, match="batch_size must be an int between 1 and the number of training examples"):
        fit(_model(), _init(), train, epochs=1, batch_size=5000, optimizer=sgd(0.1), key=jax.random.key(0), quiet=True)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        fit(_model(), _init(), train, epochs=0, batch_size=32, optimizer=sgd(0.1), key=jax.random.key(0), quiet=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        fit(
            _model(),
            _init(),
            train,
            epochs=1,
            batch_size=32,
            optimizer=sgd(0.1),
            key=jax.random.key(0),
            quiet=True,
            resume=True,
        )


def test_the_step_compiles_once_for_the_whole_run(small_data, monkeypatch):
    train, test = small_data
    real = loop_module.make_train_step

    def counted(model, loss_fn, optimizer, **kw):  # the loss is traced only inside the train step
        return real(model, chex.assert_max_traces(loss_fn, n=1), optimizer, **kw)

    monkeypatch.setattr(loop_module, "make_train_step", counted)
    _, history = fit(
        _model(),
        _init(),
        train,
        epochs=3,
        batch_size=256,
        optimizer=sgd(0.05),
        key=jax.random.key(0),
        eval_data=test,
        quiet=True,
    )
    assert history["epoch"] == [1, 2, 3]


def test_epoch_callbacks_see_what_history_records_and_the_default_log_is_one_line_per_epoch(small_data, capsys):
    train, test = small_data
    seen = []
    kw = dict(epochs=2, batch_size=256, optimizer=sgd(0.05), key=jax.random.key(0), eval_data=test)
    _, history = fit(_model(), _init(), train, quiet=True, epoch_callbacks=[seen.append], **kw)
    assert [s.epoch for s in seen] == history["epoch"] == [1, 2] and all(isinstance(s, EpochSummary) for s in seen)
    assert [s.eval_accuracy for s in seen] == history["eval_accuracy"] and [s.train_loss for s in seen] == history[
        "train_loss"
    ]
    assert capsys.readouterr().out == ""  # quiet: the library writes nothing
    fit(_model(), _init(), train, quiet=False, **kw)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"] and "eval loss" in lines[0]
    fit(_model(), _init(), train, quiet=False, epoch_callbacks=[ConsoleLog(eval_label="val")], **kw)
    assert "| val loss " in capsys.readouterr().out


def test_a_mid_epoch_checkpoint_refuses_another_batch_size_or_data_length(small_data, tmp_path):
    """Its batch index counts batches of the run's size over the run's data: anything else revisits or skips
    examples."""
    train, _ = small_data
    kw = dict(epochs=1, batch_size=256, optimizer=sgd(0.05), key=jax.random.key(0), quiet=True, checkpoint_dir=tmp_path)

    def interrupt(info: StepInfo):
        if info.step == 1:
            raise Stop()

    with pytest.raises(KeyboardInterrupt):
        fit(_model(), _init(), train, callbacks=[interrupt], **kw)
    position = load_checkpoint(tmp_path / CHECKPOINT_NAME).metadata["position"]
    assert (position["batch"], position["batch_size"], position["examples"]) == (2, 256, 1024)
    with pytest.raises(ValueError, match=r"fit: batch_size=128 contradicts the checkpoint's 256: .* stopped mid-epoch"):
        fit(_model(), _init(), train, resume=True, **dict(kw, batch_size=128))
    with pytest.raises(
        ValueError, match=r"fit: train_data holds 1000 examples, which contradicts the checkpoint's 1024"
    ):
        fit(_model(), _init(), (train[0][:1000], train[1][:1000]), resume=True, **kw)


def test_evaluate_refuses_logits_that_are_not_finite(small_data):
    """NaN params give NaN logits, whose argmax is class 0: an accuracy computed from them would mean nothing."""
    from tinyfn.train import evaluate

    _, test = small_data
    params = _init()
    params[4]["b"] = params[4]["b"].at[3].set(jnp.nan)
    with pytest.raises(
        ValueError, match=r"evaluate: the model's outputs are not finite on batch 0 \(examples 0 to 199 of 500\)"
    ):
        evaluate(_model(), params, (test[0], test[1]), batch_size=200)
