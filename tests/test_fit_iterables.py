"""fit trains on an iterable of (x, y) batches: one pass an epoch in the iterable's order, keyed steps, and a resume
of a re-iterable that is the same run; a one-shot iterator trains one epoch and is refused more, by name."""

import jax
import numpy as np
import pytest

from tinyfn.layers import Dropout, Linear, ReLU, init_with_state, serial
from tinyfn.losses import softmax_cross_entropy
from tinyfn.train import StepInfo, fit, make_train_step, sgd

MODEL = serial(Linear(16), ReLU(), Dropout(0.2), Linear(3))  # dropout: the step keys matter


class Batches:
    """A re-iterable without ``len``: each ``iter`` starts a new pass over the same batches."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)).astype(np.int32)
    return [(x[i : i + 5], y[i : i + 5]) for i in range(0, 20, 5)]  # 4 batches of 5


def _params():
    return MODEL.init(jax.random.key(0), (None, 8))[1]


def _fit(data, **kw):
    kw = dict(dict(epochs=2, optimizer=sgd(0.1, momentum=0.9), key=jax.random.key(1), quiet=True), **kw)
    return fit(MODEL, _params(), data, **kw)


def test_a_list_of_batches_trains_in_its_order_with_keyed_steps_and_resumes_as_the_same_run(batches, tmp_path):
    params, history = _fit(batches)
    step = make_train_step(MODEL, softmax_cross_entropy, sgd(0.1, momentum=0.9), with_state=True, donate=False)
    p, s = _params(), init_with_state(MODEL, jax.random.key(0), (None, 8))[2]
    o = sgd(0.1, momentum=0.9).init(p)
    for epoch in range(2):  # the reference loop: the batches in order, the key fold_in(fold_in(key, epoch), batch)
        for b, (x, y) in enumerate(batches):
            p, s, o, _ = step(p, s, o, x, y, jax.random.fold_in(jax.random.fold_in(jax.random.key(1), epoch), b))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert history["epoch"] == [1, 2]

    def stop(info: StepInfo):
        if (info.epoch, info.batch) == (1, 1):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(Batches(batches), checkpoint_dir=tmp_path, callbacks=[stop])
    resumed, _ = _fit(Batches(batches), checkpoint_dir=tmp_path, resume=True)  # skips the 2 batches epoch 2 took
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_one_shot_iterator_trains_one_epoch_and_is_refused_more_or_a_resume(batches, tmp_path):
    seen = []
    _, history = _fit(iter(batches), epochs=1, callbacks=[lambda info: seen.append(info.batch)])
    assert seen == [0, 1, 2, 3] and history["epoch"] == [1]
    with pytest.raises(ValueError, match=r"train_data is a one-shot iterator \(list_iterator\).*epochs=2 needs"):
        _fit(iter(batches))
    with pytest.raises(ValueError, match="one-shot iterator .*resume=True needs an iterable that starts a new pass"):
        _fit(iter(batches), epochs=1, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(TypeError, match="each batch of train_data must be a pair"):
        _fit([x for x, _ in batches])
