"""fit keeps the best validation epoch's checkpoint, stops early, logs each epoch to CSV, and a resumed run is the
same run: its best epoch, its patience count and its CSV rows continue where they were."""

import csv

import jax
import numpy as np
import pytest

from tinyfn.layers import Linear, ReLU, serial
from tinyfn.train import BEST_NAME, CHECKPOINT_NAME, StepInfo, evaluate, fit, load_checkpoint, sgd
from tinyfn.train.monitor import best_epochs, stale_epochs

MODEL = serial(Linear(32), ReLU(), Linear(2))
TIMES = ("images_per_second", "epoch_time", "wall_time")


@pytest.fixture(scope="module")
def noisy():
    """A learnable rule (the sign of the first feature) with 30% of the labels flipped: 32 training examples that a
    large step size overfits, so the validation loss has a best epoch and then rises."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = np.where(rng.random(64) < 0.3, x[:, 0] <= 0, x[:, 0] > 0).astype(np.int32)
    return (x[:32], y[:32]), (x[32:], y[32:])


def _fit(noisy, **kw):
    train, val = noisy
    params = MODEL.init(jax.random.key(0), (None, 8))[1]
    kw = dict(dict(epochs=6, optimizer=sgd(0.2, momentum=0.9), key=jax.random.key(1), quiet=True), **kw)
    return fit(MODEL, params, train, eval_data=val, batch_size=8, **kw)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_best_epoch_is_the_first_best_value_and_patience_counts_the_epochs_after_it():
    history = {"eval_loss": [float("nan"), 1.0, 0.9, 0.9, 1.2], "eval_accuracy": [0.5, 0.7, 0.7, float("nan"), 0.6]}
    assert best_epochs(history, "val_loss") == [None, 2, 3, 3, 3] and stale_epochs(history, "val_loss") == 2
    assert best_epochs(history, "val_accuracy") == [1, 2, 2, 2, 2] and stale_epochs(history, "val_accuracy") == 3


def test_keep_best_writes_the_best_validation_epoch_and_patience_stops_after_it(noisy, tmp_path):
    result = _fit(noisy, checkpoint_dir=tmp_path, keep_best="val_loss", patience=2)
    losses = result.history["eval_loss"]
    best = int(np.argmin(losses)) + 1
    assert result.best_epoch == best and result.history["best_epoch"][-1] == best
    assert result.stopped_early and result.history["epoch"] == list(range(1, best + 3)) and best + 2 < 6
    kept = load_checkpoint(tmp_path / BEST_NAME, like=result.params)
    assert kept.metadata["position"]["epoch"] == best  # the best epoch's params, not the last ones
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME).metadata["position"]["epoch"] == best + 2
    np.testing.assert_allclose(evaluate(MODEL, kept.params, noisy[1]).loss, losses[best - 1], rtol=1e-6)
    rows = _rows(tmp_path / "metrics.csv")  # one row per epoch, the history's values exactly
    assert [int(r["epoch"]) for r in rows] == result.history["epoch"]
    assert [float(r["eval_loss"]) for r in rows] == losses and rows[-1]["best_epoch"] == str(best)


def test_a_resumed_run_keeps_its_best_epoch_its_patience_and_its_csv_rows(noisy, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    straight = _fit(noisy, checkpoint_dir=a, keep_best="val_loss", patience=2)

    def stop_in_epoch_3(info: StepInfo):
        if info.step == 9:  # epoch 3, step 2 of 4: after the best epoch (2), before patience runs out
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(noisy, checkpoint_dir=b, keep_best="val_loss", patience=2, callbacks=[stop_in_epoch_3])
    resumed = _fit(noisy, checkpoint_dir=b, keep_best="val_loss", patience=2, resume=True)
    same = lambda h: {k: v for k, v in h.items() if k not in TIMES}  # noqa: E731
    assert same(resumed.history) == same(straight.history) and resumed.stopped_early
    assert resumed.best_epoch == straight.best_epoch
    for x, y in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(
        jax.tree.leaves(load_checkpoint(a / BEST_NAME).params), jax.tree.leaves(load_checkpoint(b / BEST_NAME).params)
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert [int(r["epoch"]) for r in _rows(b / "metrics.csv")] == straight.history["epoch"]  # no row twice
    again = _fit(noisy, checkpoint_dir=b, keep_best="val_loss", patience=2, resume=True)  # it stopped: it stays stopped
    assert again.history["epoch"] == straight.history["epoch"] and again.stopped_early


def test_log_csv_writes_the_history_without_a_checkpoint_dir(noisy, tmp_path):
    result = _fit(noisy, epochs=2, log_csv=tmp_path / "log" / "m.csv")
    rows = _rows(tmp_path / "log" / "m.csv")
    assert [float(r["train_loss"]) for r in rows] == result.history["train_loss"] and "best_epoch" not in rows[0]
    assert [float(r["eval_loss"]) for r in rows] == result.history["eval_loss"]


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(keep_best="loss"), "keep_best must be one of 'val_loss', 'val_accuracy' or None, got 'loss'"),
        (dict(keep_best="val_loss"), "keep_best='val_loss' writes the best epoch's checkpoint .*give checkpoint_dir"),
        (dict(patience=0), "patience must be a positive int"),
        (dict(patience=2, eval_data=None), "patience=2 monitors val_loss, which needs eval_data"),
    ],
)
def test_bad_monitor_arguments_are_refused_before_training(noisy, kw, message):
    train, val = noisy
    params = MODEL.init(jax.random.key(0), (None, 8))[1]
    kw = dict(dict(eval_data=val), **kw)
    with pytest.raises(ValueError, match=message):
        fit(MODEL, params, train, epochs=1, batch_size=8, optimizer=sgd(0.1), key=jax.random.key(0), quiet=True, **kw)
