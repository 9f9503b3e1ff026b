"""Architecture as JSON (to_spec/from_spec) and the summary table."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tinyfn
from tinyfn import models
from tinyfn.layers import (
    AvgPool2D,
    BatchNorm1D,
    Concat,
    Conv2D,
    Flatten,
    Layer,
    LayerNorm,
    Linear,
    ReLU,
    apply_with_state,
    branch,
    from_spec,
    init_with_state,
    register_layer,
    residual,
    serial,
    to_spec,
)


def _inception():
    return serial(
        branch(
            Conv2D(2, 1),
            serial(Conv2D(2, 1), ReLU(), Conv2D(3, 3, padding=1)),
            AvgPool2D(3, 1, 1, count_include_pad=False),
        ),
        Concat(),
        residual(serial(Conv2D(6, 3, padding=1), ReLU())),
        Flatten(),
        Linear(8),
        BatchNorm1D(),
        LayerNorm(),
        Linear(3),
    )


@pytest.mark.parametrize(
    "build, shape",
    [
        (models.lenet5, (None, 1, 28, 28)),
        (lambda: models.resnet(width=4, blocks_per_stage=1), (None, 1, 8, 8)),
        (_inception, (None, 1, 6, 6)),
    ],
)
def test_a_model_round_trips_through_json_and_computes_the_same(build, shape):
    model = build()
    text = json.dumps(to_spec(model))
    rebuilt = from_spec(text)
    assert repr(rebuilt) == repr(model) and to_spec(rebuilt) == json.loads(text)
    _, p1, s1 = init_with_state(model, jax.random.key(0), shape)
    _, p2, s2 = init_with_state(rebuilt, jax.random.key(0), shape)
    jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p2)
    x = jax.random.normal(jax.random.key(1), (2,) + shape[1:])
    np.testing.assert_array_equal(
        apply_with_state(model, p1, s1, x, train=True)[0], apply_with_state(rebuilt, p2, s2, x, train=True)[0]
    )


def _old_spec():
    """A spec as tinyfn wrote it before the layers took stax's casing (``fan_out``, ``identity``, ``add``,
    ``concat``)."""
    fan = {"name": "fan_out", "config": {"n": 2}}
    identity, linear = (
        {"name": "identity", "config": {}},
        {"name": "Linear", "config": {"out_features": 3, "use_bias": True}},
    )
    pair = {"name": "parallel", "config": {}, "children": [identity, linear]}
    body = [
        fan,
        pair,
        {"name": "add", "config": {}},
        {"name": "branch", "config": {}, "children": [identity, identity]},
    ]
    return {"name": "serial", "config": {}, "children": [*body, {"name": "concat", "config": {"axis": 1}}]}


def test_specs_saved_with_the_old_names_still_load(tmp_path):
    from tinyfn.train import checkpoint, model_io

    model = from_spec(json.dumps(_old_spec()))
    assert [c.name for c in model.children] == ["FanOut", "parallel", "Add", "branch", "Concat"]
    assert to_spec(model)["children"][0] == {"name": "FanOut", "config": {"n": 2}}
    _, params = model.init(jax.random.key(0), (None, 3))
    x = jax.random.normal(jax.random.key(1), (2, 3))
    w, b = params[1][1]["w"], params[1][1]["b"]
    np.testing.assert_allclose(model.apply(params, x), np.tile(x + x @ w + b[None, :], 2), rtol=1e-6)
    # a checkpoint whose recorded model uses the old names loads through the same map
    record = {"model": {"spec": _old_spec(), "input_shape": [3]}}
    path = checkpoint.save_checkpoint(tmp_path / "old.safetensors", params, metadata=record)
    loaded, loaded_params, _ = model_io.load_model(path)
    np.testing.assert_array_equal(loaded.apply(loaded_params, x), model.apply(params, x))


def test_tuples_in_configs_come_back_as_tuples():
    spec = to_spec(Conv2D(3, (2, 3), stride=(1, 2)))
    assert spec["config"]["kernel_size"] == [2, 3]
    assert from_spec(spec).config["kernel_size"] == (2, 3)


def _custom():
    return Layer(lambda k, s: (s, {}), lambda p, x, **kw: x * 2, "Double")


def test_an_unknown_layer_is_named_with_its_place_in_the_tree():
    model = serial(ReLU(), _custom())
    with pytest.raises(ValueError, match=r"to_spec: model.children\[1\] is a layer named 'Double'"):
        to_spec(model)
    with pytest.raises(ValueError, match=r"from_spec: unknown layer 'Double' at spec.children\[0\]"):
        from_spec({"name": "serial", "config": {}, "children": [{"name": "Double", "config": {}}]})


def test_registered_layers_round_trip(monkeypatch):
    from tinyfn.layers import spec as spec_module

    monkeypatch.setitem(spec_module.LAYERS, "Double", (_custom, False))
    rebuilt = from_spec(to_spec(serial(ReLU(), _custom())))
    assert rebuilt.children[1].name == "Double"
    with pytest.raises(TypeError, match="register_layer: constructor must be callable"):
        register_layer("Triple", 3)


def test_summary_counts_params_and_shows_shapes():
    model = models.resnet(width=4, blocks_per_stage=1)
    text = tinyfn.summary(model, (None, 1, 28, 28))
    _, params, state = init_with_state(model, jax.random.key(0), (None, 1, 28, 28))
    total = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))
    n_state = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(state))
    lines = text.splitlines()
    assert lines[0].split() == ["Name", "Layer", "Output", "shape", "Params", "State"]
    assert lines[-1] == f"Total params: {total:,}   State entries: {n_state:,}"
    assert lines[1].split()[:4] == ["(model)", "serial", "(N,", "10)"]
    first_conv = lines[2].split()
    assert (
        first_conv[:2] == ["conv1", "Conv2D(out_channels=4,"]
        and "(N, 4, 14, 14)" in lines[2]
        and lines[2].split()[-2] == str(4 * 4 * 4)
    )  # the 4x4 stride-2 stem
    assert sum(1 for line in lines if line.split()[1] == "residual") == 3
    shortcut = next(line for line in lines if line.startswith("block2.shortcut1.conv1 "))
    assert "Conv2D(out_channels=8, kernel_size=1" in shortcut  # a projection's 1x1 conv
    lenet = tinyfn.summary(models.lenet5(), (None, 1, 28, 28)).splitlines()
    assert lenet[-1].startswith("Total params: 61,706")
    with pytest.raises(TypeError, match="summary: model must be a Layer"):
        tinyfn.summary(jnp.ones(3), (None, 3))
