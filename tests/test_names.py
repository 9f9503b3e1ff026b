"""Every layer has a stable, readable name (``conv1``, ``block2.conv1``, or the user's), used by checkpoints,
``summary``, ``visualize --layer``, error messages and the addressing of a sub-tree of params."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from tinyfn import models
from tinyfn.layers import (
    Conv2D,
    Flatten,
    Linear,
    Named,
    ReLU,
    from_spec,
    init_with_state,
    layer_names,
    leaf_names,
    named_params,
    param_mask,
    params_at,
    residual,
    serial,
    summary,
    to_spec,
)
from tinyfn.train import (
    apply_updates,
    chain,
    checkpoint,
    freeze,
    load_model,
    load_params,
    model_record,
    save_checkpoint,
    scale_where,
    sgd,
)
from tinyfn.visualize.record import layer_table

SMALL = (None, 1, 6, 6)


def _small(*extra):
    """conv - relu - (extra) - flatten - linear on 6x6 inputs: the smallest model with two kinds of params."""
    return serial(Conv2D(2, 3), ReLU(), *extra, Flatten(), Linear(3))


def _tiny_resnet():
    return models.resnet(width=2, blocks_per_stage=1, stages=2)  # stem, block1 (identity), block2 (projection)


def _names(model):
    return [n.name for n in layer_names(model)]


def test_lenet5_and_resnet_layers_have_the_documented_names():
    assert _names(models.lenet5()) == [
        "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten1",
        "linear1", "relu3", "linear2", "relu4", "linear3",
    ]  # fmt: skip
    table = {n.name: n.path for n in layer_names(_tiny_resnet())}
    assert list(table)[:4] == ["conv1", "bn1", "relu1", "block1"]
    assert table["block2"] == (4,) and table["block2.residual1"] == (4, 0)
    assert table["block2.conv1"] == (4, 0, "body", 0) and table["block2.bn2"] == (4, 0, "body", 4)
    assert table["block2.shortcut1.conv1"] == (4, 0, "shortcut", 0) and table["block2.relu2"] == (4, 1)
    assert list(table)[-2:] == ["gap1", "linear1"]
    block = residual(serial(Conv2D(2, 3, padding=1), ReLU()), Conv2D(2, 1))  # a residual as the whole model
    assert _names(block) == ["conv1", "relu1", "shortcut1"]


def test_inserting_a_relu_renames_no_conv():
    before = serial(Conv2D(2, 3), Conv2D(2, 1), Flatten(), Linear(3))
    after = serial(Conv2D(2, 3), ReLU(), Conv2D(2, 1), Flatten(), Linear(3))
    p_before = before.init(jax.random.key(0), SMALL)[1]
    p_after = after.init(jax.random.key(0), SMALL)[1]
    assert set(named_params(before, p_before)) == set(named_params(after, p_after))
    assert named_params(after, p_after)["conv2.w"] is p_after[2]["w"]  # the position moved, the name did not


def test_user_names_name_layers_and_scopes_and_survive_a_spec():
    model = serial(Named("stem", Conv2D(2, 3)), ReLU(), Named("head", serial(Flatten(), Linear(3))))
    expected = ["stem", "relu1", "head", "head.flatten1", "head.linear1"]
    assert _names(model) == expected
    rebuilt = from_spec(json.dumps(to_spec(model)))
    assert _names(rebuilt) == expected
    assert _names(from_spec(json.dumps(to_spec(_small())))) == ["conv1", "relu1", "flatten1", "linear1"]


def test_a_name_used_twice_in_a_scope_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"'a' names both a ReLU and a Linear at the top level"):
        serial(Named("a", ReLU()), Named("a", Linear(2)))
    with pytest.raises(ValueError, match=r"'conv1' names both a ReLU and a Conv2D"):
        serial(Named("conv1", ReLU()), Conv2D(2, 3))
    with pytest.raises(ValueError, match=r"Named: name must be a non-empty string without '\.'"):
        Named("a.b", ReLU())
    assert _names(serial(Named("a", ReLU()), serial(Named("a", ReLU())))) == ["a", "block1", "block1.a"]


def test_named_params_and_params_at_address_the_tree_both_ways():
    model = _tiny_resnet()
    _, params, state = init_with_state(model, jax.random.key(0), SMALL)
    named = named_params(model, params)
    assert named["block2.conv1.w"] is params[4][0]["body"][0]["w"]
    assert named["block2.shortcut1.bn1.gamma"] is params[4][0]["shortcut"][1]["gamma"]
    assert (
        "model_state" not in named and named_params(model, state)["block2.bn1.mean"] is state[4][0]["body"][1]["mean"]
    )
    structure = jax.tree_util.tree_structure(params)
    back = jax.tree_util.tree_unflatten(structure, [named[n] for n in leaf_names(model, params)])
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: a is b, back, params))
    assert (
        params_at(model, params, "block2") is params[4]
        and params_at(model, params, "block1.conv2") is params[3][0]["body"][3]
    )
    with pytest.raises(
        ValueError, match=r"params_at: the model has no layer named 'block9'; its layers are conv1, bn1"
    ):
        params_at(model, params, "block9")


def _step(model, params, optimizer):
    x = jnp.linspace(-1.0, 1.0, 2 * 36).reshape(2, 1, 6, 6)
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return apply_updates(params, updates), updates


def test_param_mask_freezes_exactly_the_chosen_layer_in_an_optimizer_step():
    model = _small()
    params = model.init(jax.random.key(0), SMALL)[1]
    mask = param_mask(model, params, include=("conv1",))
    assert mask == ({"w": True, "b": True}, {}, {}, {"w": False, "b": False})
    new, _ = _step(model, params, chain(sgd(0.1, momentum=0.9, weight_decay=0.1), freeze(mask)))
    np.testing.assert_array_equal(new[0]["w"], params[0]["w"])  # bit for bit
    np.testing.assert_array_equal(new[0]["b"], params[0]["b"])
    assert not np.allclose(new[3]["w"], params[3]["w"]) and not np.allclose(new[3]["b"], params[3]["b"])
    _, plain = _step(model, params, sgd(0.1))
    _, slow = _step(model, params, chain(sgd(0.1), scale_where(param_mask(model, params, include="linear*"), 0.25)))
    np.testing.assert_array_equal(slow[0]["w"], plain[0]["w"])  # a per-layer learning rate: the head at a quarter
    np.testing.assert_allclose(slow[3]["w"], 0.25 * plain[3]["w"], rtol=1e-6)
    assert param_mask(model, params, include="*", exclude=("*.b",))[3] == {"w": True, "b": False}
    with pytest.raises(ValueError, match=r"param_mask: pattern 'conv9' matches no parameter"):
        param_mask(model, params, include=("conv9",))


def test_a_partial_load_takes_the_chosen_layers_by_name_even_after_an_insertion(tmp_path):
    old = _small()
    old_params = old.init(jax.random.key(0), SMALL)[1]
    path = save_checkpoint(tmp_path / "c.safetensors", old_params, metadata={"model": model_record(old, SMALL[1:])})
    new = _small(ReLU())  # a layer inserted before the head: positions shift, names do not
    params = new.init(jax.random.key(1), SMALL)[1]
    part = load_params(path, params, new, only=("conv1",))
    np.testing.assert_array_equal(part[0]["w"], old_params[0]["w"])
    np.testing.assert_array_equal(part[4]["w"], params[4]["w"])  # kept
    whole = load_params(path, params, new)
    np.testing.assert_array_equal(whole[4]["w"], old_params[3]["w"])  # linear1 found at its new position
    with pytest.raises(ValueError, match=r"param_mask: pattern 'stem' matches no parameter"):
        load_params(path, params, new, only=("stem",))


def _resnet_checkpoint(tmp_path, monkeypatch=None):
    model = _tiny_resnet()
    _, params, state = init_with_state(model, jax.random.key(0), SMALL)
    state = jax.tree_util.tree_map(lambda a: a + 0.5, state)
    if monkeypatch is not None:  # the naming before layer names: every tensor under its pytree path
        monkeypatch.setattr(checkpoint, "_layer_renames", lambda model, metadata, trees: {})
    meta = {"model": model_record(model, SMALL[1:])}
    path = save_checkpoint(tmp_path / "c.safetensors", params, model_state=state, metadata=meta)
    return model, params, state, path


def test_an_old_positional_checkpoint_still_loads(tmp_path, monkeypatch):
    model, params, state, path = _resnet_checkpoint(tmp_path, monkeypatch)
    assert "4.0.body.1.gamma" in load_file(path) and "model_state.4.0.body.1.mean" in load_file(path)
    loaded = load_model(path)
    jax.tree_util.tree_map(np.testing.assert_array_equal, (loaded.params, loaded.model_state), (params, state))
    zeros = jax.tree_util.tree_map(jnp.zeros_like, (params, state))
    p, s = load_params(path, zeros[0], model, only=("block2",), model_state=zeros[1])
    np.testing.assert_array_equal(p[4][0]["body"][1]["gamma"], params[4][0]["body"][1]["gamma"])
    np.testing.assert_array_equal(s[4][0]["body"][1]["mean"], state[4][0]["body"][1]["mean"])
    np.testing.assert_array_equal(p[0]["w"], zeros[0][0]["w"])  # conv1 not asked for


def test_checkpoint_tensors_are_named_by_layer(tmp_path):
    model, params, state, path = _resnet_checkpoint(tmp_path)
    names = set(load_file(path))
    assert {"conv1.w", "bn1.gamma", "block2.conv1.w", "block2.shortcut1.conv1.w", "linear1.b"} <= names
    assert {"model_state.bn1.mean", "model_state.block2.bn2.var"} <= names
    assert not any(n[0].isdigit() for n in names)
    loaded = load_model(path)
    jax.tree_util.tree_map(np.testing.assert_array_equal, (loaded.params, loaded.model_state), (params, state))
    plain = _small()
    p = plain.init(jax.random.key(0), SMALL)[1]
    written = save_checkpoint(tmp_path / "p.safetensors", p, model=plain)  # the model given, no metadata
    assert set(load_file(written)) == {"conv1.w", "conv1.b", "linear1.w", "linear1.b"}


@pytest.mark.parametrize("build, shape", [(models.lenet5, (None, 1, 28, 28)), (models.resnet, (None, 1, 28, 28)),
                                          (models.vit, (None, 1, 28, 28))])  # fmt: skip
def test_summary_fits_in_100_columns_and_shows_the_names(build, shape):
    model = build()
    lines = summary(model, shape).splitlines()
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    assert lines[0].split()[:2] == ["Name", "Layer"]
    shown = [line.split()[0] for line in lines[2:-1]]
    assert shown == _names(model)


def test_visualize_and_the_params_check_use_the_same_names():
    assert [t.name for t in layer_table(models.lenet5())][:4] == ["conv1", "relu1", "pool1", "conv2"]
    model = _tiny_resnet()
    table = [t.name for t in layer_table(model)]
    assert table[:6] == ["conv1", "bn1", "relu1", "block1.residual1", "block1.relu2", "block2.residual1"]
    assert set(table) <= set(_names(model))
    model = _small()
    params = list(model.init(jax.random.key(0), SMALL)[1])
    params[3] = {**params[3], "b": params[3]["b"][:2]}
    with pytest.raises(ValueError, match=r"^serial: params\[3\]\['b'\] \(linear1: layer 3, Linear\) has shape"):
        model.apply(tuple(params), jnp.ones((1, 1, 6, 6)))
