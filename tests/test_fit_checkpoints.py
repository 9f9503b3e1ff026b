"""What fit writes, every tool opens: the model is recorded in its checkpoints, their optimizer and model states
start a new run (in the optimizers' own state classes), and optax transformations that need extra arguments either
get them or are refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyfn.layers import Linear, ReLU, apply_with_state, parameterless, serial
from tinyfn.losses import softmax_cross_entropy
from tinyfn.train import (
    AdamState,
    Checkpoint,
    CheckpointError,
    StepInfo,
    adam,
    apply_updates,
    fit,
    load_checkpoint,
    load_model,
    make_train_step,
    restore_like,
    save_checkpoint,
    sgd,
)

MODEL = serial(Linear(16), ReLU(), Linear(3))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)


def _params():
    return MODEL.init(jax.random.key(0), (None, 8))[1]


def _fit(model, data, **kw):
    kw = dict(dict(epochs=1, batch_size=16, optimizer=sgd(0.1, momentum=0.9), key=jax.random.key(1), quiet=True), **kw)
    return fit(model, _params(), data, **kw)


def test_load_model_opens_the_checkpoint_fit_writes(data, tmp_path):
    params, _ = _fit(MODEL, data, checkpoint_dir=tmp_path)  # was: "does not record its model (... see model_record)"
    model, loaded, meta = load_model(tmp_path)
    assert meta["model"]["input_shape"] == [8]
    logits = apply_with_state(model, loaded, {}, data[0])[0]
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(MODEL.apply(params, data[0])))


def test_a_model_to_spec_cannot_describe_still_checkpoints_and_a_given_record_is_kept(data, tmp_path):
    odd = serial(Linear(16), parameterless("Swish", lambda x: x * jax.nn.sigmoid(x)), Linear(3))
    _fit(odd, data, checkpoint_dir=tmp_path / "odd")
    assert "model" not in load_checkpoint(tmp_path / "odd" / "checkpoint.safetensors").metadata
    _fit(MODEL, data, checkpoint_dir=tmp_path / "own", metadata={"model": {"name": "mine"}})
    assert load_checkpoint(tmp_path / "own" / "checkpoint.safetensors").metadata["model"] == {"name": "mine"}


def test_load_checkpoint_with_templates_returns_the_optimizers_own_state_classes(tmp_path):
    params = _params()
    for optimizer, cls in ((adam(1e-3), AdamState), (optax.chain(optax.clip(1.0), optax.adam(1e-3)), None)):
        state = optimizer.init(params)
        save_checkpoint(tmp_path / "c.safetensors", params, opt_state=state)
        plain = load_checkpoint(tmp_path / "c.safetensors").opt_state  # look-alike namedtuples, as before
        ckpt = load_checkpoint(tmp_path / "c.safetensors", like=Checkpoint(params, optimizer.init(params)))
        assert jax.tree.structure(ckpt.opt_state) == jax.tree.structure(state)
        assert jax.tree.structure(restore_like(plain, state)) == jax.tree.structure(state)
        if cls is None:  # optax's own classes: optax's update takes the restored state
            assert isinstance(ckpt.opt_state[1][0], optax.ScaleByAdamState)
            optimizer.update(params, ckpt.opt_state, params)
        else:
            assert isinstance(ckpt.opt_state, cls)
    with pytest.raises(
        CheckpointError, match=r"c.safetensors: opt_state holds 9 arrays but the expected opt_state has 5"
    ):
        load_checkpoint(tmp_path / "c.safetensors", like=Checkpoint(params, sgd(0.1, momentum=0.9).init(params)))


def test_fit_starts_from_a_given_optimizer_state_and_refuses_another_optimizers(data, tmp_path):
    optimizer = sgd(0.1, momentum=0.9)
    _fit(MODEL, data, checkpoint_dir=tmp_path)  # one full-batch step: the checkpoint holds momentum
    ckpt = load_checkpoint(tmp_path / "checkpoint.safetensors", like=Checkpoint(_params(), optimizer.init(_params())))
    assert float(jnp.abs(jax.tree.leaves(ckpt.opt_state.velocity)[0]).sum()) > 0
    params, _ = _fit(MODEL, data, optimizer=optimizer, opt_state=ckpt.opt_state)  # from the initial params again
    grads = jax.grad(lambda p: softmax_cross_entropy(MODEL.apply(p, data[0]), data[1]))(_params())
    expected = apply_updates(_params(), optimizer.update(grads, ckpt.opt_state, _params())[0])  # momentum continues
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="fit: opt_state= does not match the run's .*holds 9 arrays"):
        _fit(MODEL, data, optimizer=optimizer, opt_state=adam(0.1).init(_params()))
    with pytest.raises(ValueError, match="fit: opt_state= starts a new run .*resume=True continues"):
        _fit(MODEL, data, optimizer=optimizer, opt_state=ckpt.opt_state, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="fit: model_state= does not match the run's"):
        _fit(MODEL, data, model_state={"mean": jnp.zeros(3)})


def test_reduce_on_plateau_gets_the_batch_loss_as_value_or_is_refused_by_name(data, tmp_path):
    optimizer = optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(accumulation_size=1))
    with pytest.raises(TypeError, match=r"reduce_on_plateau needs the keyword argument\(s\) value .*update_extra_args"):
        make_train_step(MODEL, softmax_cross_entropy, optimizer)  # was: a TypeError deep inside optax
    losses = []
    _fit(
        MODEL,
        data,
        epochs=3,
        optimizer=optimizer,
        checkpoint_dir=tmp_path,
        update_extra_args=lambda metrics: {"value": metrics["loss"]},
        callbacks=[lambda info: losses.append(info.loss) if isinstance(info, StepInfo) else None],
    )
    state = load_checkpoint(tmp_path / "checkpoint.safetensors").opt_state[1]
    assert state.best_value.dtype == jnp.float32 and int(state.count) == 0  # reset after each 1-step accumulation
    np.testing.assert_allclose(float(state.best_value), min(losses), rtol=1e-6)  # it saw every step's loss
