"""Layers: init declares the shape apply produces; params are plain pytrees; serial threads keys and shapes."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import models
from tinyfn.layers import (
    Conv2D,
    Deconv2D,
    Dropout,
    Flatten,
    Layer,
    Linear,
    LogSoftmax,
    MaxPool2D,
    ReLU,
    Softmax,
    serial,
)

CONV_CONFIGS = [
    dict(kernel_size=k, stride=s, padding=p) for k, s, p in itertools.product([1, (3, 2)], [1, (2, 3)], [0, (1, 2)])
]


def _agree(layer, input_shape, batch=2, key=None):
    key = jax.random.key(0) if key is None else key
    out_shape, params = layer.init(key, (None, *input_shape))
    x = jnp.ones((batch, *input_shape), jnp.float32)
    y = layer.apply(params, x, key=key, train=True)
    assert y.shape == (batch, *out_shape[1:]), (layer, y.shape, out_shape)
    assert out_shape[0] is None
    return params


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
def test_conv2d_and_deconv2d_shape_agreement(cfg):
    params = _agree(Conv2D(3, **cfg), (2, 7, 6))
    assert params["w"].shape[:2] == (3, 2)
    s = cfg["stride"] if isinstance(cfg["stride"], tuple) else (cfg["stride"],) * 2
    for op in {(0, 0), (s[0] - 1, s[1] - 1)}:
        params = _agree(Deconv2D(3, output_padding=op, **cfg), (2, 4, 5))
        assert params["w"].shape[:2] == (2, 3)  # (in, out, kh, kw)


@pytest.mark.parametrize("window,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0))])
def test_max_pool_shape_agreement(window, stride, padding):
    _agree(MaxPool2D(window, stride, padding), (2, 7, 6))


@pytest.mark.parametrize("layer", [ReLU(), Flatten(), Dropout(0.5), Softmax(), LogSoftmax(1), Linear(5)], ids=repr)
def test_other_layers_shape_agreement(layer):
    _agree(layer, (3, 4) if layer.name != "Linear" else (4,))


def test_lenet5_shapes_params_and_any_batch_size():
    model = models.lenet5()
    out_shape, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    assert out_shape == (None, 10)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(params))
    assert n_params == 61706  # the classic count: 156 + 2416 + 48120 + 10164 + 850
    for batch in (1, 5):
        assert model.apply(params, jnp.zeros((batch, 1, 28, 28))).shape == (batch, 10)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(jax.jit(lambda p: p)(params))


def test_resnet_strided_stem_reaches_the_same_stages_without_the_first_projection():
    from tinyfn.layers import apply_with_state, init_with_state, to_spec

    plain = models.resnet(
        width=16, blocks_per_stage=2, first_stride=2, stem_stride=1
    )  # 3x3 stem at 28x28, first block of stride 2 with a 1x1 projection
    strided = models.resnet(
        width=16, blocks_per_stage=2, stem_stride=2, first_stride=1
    )  # 4x4 stride-2 stem, identity shortcuts in the first stage
    assert to_spec(models.resnet()) == to_spec(
        models.resnet(width=24, blocks_per_stage=(1, 1, 3), stem_stride=2, first_stride=1)
    )  # the defaults: the recipe's model
    (shape_a, params_a, _), (shape_b, params_b, state_b) = (
        init_with_state(m, jax.random.key(0), (None, 1, 28, 28)) for m in (plain, strided)
    )
    count = lambda p: sum(a.size for a in jax.tree_util.tree_leaves(p))  # noqa: E731
    assert shape_a == shape_b == (None, 10) and count(params_a) == 175_258
    # the same network, less the projection (1x1 conv 16->16 and its batch norm: 256 + 32) and with a 4x4 stem for
    # the 3x3 (+7 * 16)
    assert count(params_b) == 175_258 - 256 - 32 + 7 * 16
    assert params_b[0]["w"].shape == (16, 1, 4, 4)
    stem_out = strided.children[0].apply(params_b[0], jnp.zeros((2, 1, 28, 28)))
    assert stem_out.shape == (2, 16, 14, 14)
    logits, _ = apply_with_state(strided, params_b, state_b, jnp.ones((3, 1, 28, 28)), train=False)
    assert logits.shape == (3, 10)
    with pytest.raises(ValueError, match=r"stem_stride must be 1 or even .* got 3"):
        models.resnet(stem_stride=3)


def test_resnet_takes_one_block_count_per_stage():
    from collections import Counter

    from tinyfn.layers import init_with_state, to_spec

    count = lambda m: sum(
        a.size for a in jax.tree_util.tree_leaves(init_with_state(m, jax.random.key(0), (None, 1, 28, 28))[1])
    )  # noqa: E731
    widths = lambda m: Counter(
        c.children[0].children[0].children[0].config["out_channels"]
        for c in m.children
        if c.children and c.children[0].name == "residual"
    )  # noqa: E731
    uniform, deep = models.resnet(width=4, blocks_per_stage=2), models.resnet(width=4, blocks_per_stage=(1, 1, 4))
    assert widths(uniform) == {4: 2, 8: 2, 16: 2} and widths(deep) == {
        4: 1,
        8: 1,
        16: 4,
    }  # blocks per stage, by their width
    block = lambda c: 2 * (9 * c * c + 2 * c)  # noqa: E731  # two 3x3 convs without bias, two batch norms (scale, shift)
    # (1, 1, 4) moves one identity block of the first stage (4 channels) and one of the second (8) to the third (16)
    assert count(deep) == count(uniform) - block(4) - block(8) + 2 * block(16)
    assert to_spec(models.resnet(width=4, blocks_per_stage=(2, 2, 2))) == to_spec(uniform)
    with pytest.raises(ValueError, match=r"blocks_per_stage must be an int or one count per stage \(3\), got \(1, 2\)"):
        models.resnet(blocks_per_stage=(1, 2))
    with pytest.raises(ValueError, match=r"blocks_per_stage\[1\] must be an int >= 0 \(0 skips the stage\), got -1"):
        models.resnet(blocks_per_stage=(1, -1, 2))
    with pytest.raises(ValueError, match=r"blocks_per_stage\[0\] must be an int >= 0 \(0 skips the stage\), got 1.5"):
        models.resnet(blocks_per_stage=(1.5, 1, 2))
    with pytest.raises(ValueError, match=r"blocks_per_stage must hold at least one block, got \(0, 0, 0\)"):
        models.resnet(blocks_per_stage=(0, 0, 0))
    # (0, 1, 4) skips the first stage: its block of 4 channels goes, and the second stage's first block
    # projects the stem's 4 channels (as the first stage's output before) to 8 at stride 2
    skipped = models.resnet(width=4, blocks_per_stage=(0, 1, 4))
    assert widths(skipped) == {8: 1, 16: 4} and count(skipped) == count(deep) - block(4)
    out_shape, *_ = init_with_state(skipped, jax.random.key(0), (None, 1, 28, 28))
    assert out_shape == (None, 10)


def test_init_is_driven_only_by_the_key():
    model = serial(Conv2D(4, 3), ReLU(), Flatten(), Linear(3))
    _, a = model.init(jax.random.key(1), (None, 1, 6, 6))
    _, b = model.init(jax.random.key(1), (None, 1, 6, 6))
    _, c = model.init(jax.random.key(2), (None, 1, 6, 6))
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a[0]["w"], c[0]["w"])
    assert not np.array_equal(a[0]["w"].ravel()[:3], a[3]["w"].ravel()[:3])  # each layer gets its own key


def test_he_initialisation_scale():
    _, p = Conv2D(64, 3).init(jax.random.key(0), (None, 32, 8, 8))
    fan_in = 32 * 9
    assert abs(float(jnp.std(p["w"])) - np.sqrt(2.0 / fan_in)) < 0.05 * np.sqrt(2.0 / fan_in)
    np.testing.assert_array_equal(p["b"], 0.0)


def test_dropout_inside_serial_uses_the_key_only_when_training():
    model = serial(Linear(50), Dropout(0.5))
    _, params = model.init(jax.random.key(0), (None, 10))
    x = jnp.ones((4, 10))
    np.testing.assert_array_equal(model.apply(params, x), model.apply(params, x, train=False))
    y1 = model.apply(params, x, key=jax.random.key(1), train=True)
    y2 = model.apply(params, x, key=jax.random.key(2), train=True)
    assert not np.array_equal(y1, y2)
    with pytest.raises(ValueError, match="key"):
        model.apply(params, x, train=True)


def test_layers_carry_their_structure():
    model = models.lenet5()
    assert isinstance(model, Layer) and model.name == "serial"
    assert [c.name for c in model.children][:3] == ["Conv2D", "ReLU", "MaxPool2D"]
    assert model.children[0].config["kernel_size"] == (5, 5)
    assert "Conv2D(out_channels=6" in repr(model)
