"""Bad input raises a ValueError/TypeError naming the argument, its value and what was expected."""

import jax
import jax.numpy as jnp
import pytest

from tinyfn import losses
from tinyfn.layers import (
    Conv2D,
    Deconv2D,
    Dropout,
    Linear,
    MaxPool2D,
    Softmax,
    conv2d,
    deconv2d,
    dropout,
    linear,
    log_softmax,
    max_pool2d,
    max_unpool2d,
    relu,
    serial,
    softmax,
)

X = jnp.zeros((2, 3, 8, 8))
W = jnp.zeros((4, 3, 3, 3))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: conv2d(jnp.zeros((3, 8, 8)), W),
            ValueError,
            r"x must have rank 4 \(N, C, H, W\), got shape \(3, 8, 8\)",
        ),
        (lambda: conv2d(X, jnp.zeros((4, 2, 3, 3))), ValueError, r"x has 3 channels.*w expects 2"),
        (
            lambda: conv2d(X, jnp.zeros((4, 3, 11, 3))),
            ValueError,
            r"kernel_size \(11, 3\) is larger than the padded input \(height 8",
        ),
        (lambda: conv2d(X, W, stride=0), ValueError, r"stride must be >= 1, got 0"),
        (lambda: conv2d(X, W, stride=(1, -2)), ValueError, r"stride must be >= 1, got \(1, -2\)"),
        (lambda: conv2d(X, W, padding=-1), ValueError, r"padding must be >= 0, got -1"),
        (
            lambda: conv2d(X, W, padding=(1, 2, 3)),
            ValueError,
            r"padding must be an int or a pair of ints, got \(1, 2, 3\)",
        ),
        (lambda: conv2d(X, W, stride=1.5), TypeError, r"stride must be an int or a pair of ints, got 1.5"),
        (lambda: conv2d(X.astype(jnp.int32), W), TypeError, r"x must have a floating dtype, got int32"),
        (lambda: conv2d(X, W, jnp.zeros(5)), ValueError, r"b has shape \(5,\), expected \(4,\)"),
        (lambda: conv2d(X, W, dilation=2), TypeError, r"dilation"),
        (lambda: deconv2d(X, jnp.zeros((4, 3, 3, 3))), ValueError, r"x has 3 channels.*w expects 4"),
        (
            lambda: deconv2d(X, jnp.zeros((3, 4, 3, 3)), stride=2, output_padding=2),
            ValueError,
            r"output_padding \(2, 2\) must be smaller than stride \(2, 2\)",
        ),
        (lambda: deconv2d(X, jnp.zeros((3, 4, 3, 3)), output_padding=-1), ValueError, r"output_padding must be >= 0"),
        (
            lambda: deconv2d(jnp.zeros((1, 3, 1, 1)), jnp.zeros((3, 4, 1, 1)), padding=1),
            ValueError,
            r"output size .* is not positive",
        ),
        (lambda: max_pool2d(X, 0), ValueError, r"window must be >= 1, got 0"),
        (lambda: max_pool2d(X, 2, padding=2), ValueError, r"padding \(2, 2\) must be at most half of window"),
        (lambda: max_pool2d(X, 9), ValueError, r"window \(9, 9\) is larger than the padded input"),
        (lambda: max_pool2d(X.astype(jnp.uint8), 2), TypeError, r"x must have a floating dtype, got uint8"),
        (
            lambda: max_unpool2d(jnp.zeros((1, 1, 2, 2)), jnp.zeros((1, 1, 2, 2)), (4, 4)),
            TypeError,
            r"switches must have an integer dtype, got float32",
        ),
        (
            lambda: max_unpool2d(jnp.zeros((1, 1, 2, 2)), jnp.zeros((1, 1, 2, 3), jnp.int32), (4, 4)),
            ValueError,
            r"switches has shape \(1, 1, 2, 3\), expected y's shape",
        ),
        (
            lambda: linear(jnp.zeros((2, 3)), jnp.zeros((4, 5))),
            ValueError,
            r"x's last dimension to equal w.shape\[0\] = 4",
        ),
        (
            lambda: linear(jnp.zeros((2, 3)), jnp.zeros((3, 5)), jnp.zeros(4)),
            ValueError,
            r"b has shape \(4,\), expected \(5,\)",
        ),
        (
            lambda: linear(jnp.zeros((2, 3), jnp.float16), jnp.zeros((3, 5))),
            TypeError,
            r"w has dtype float32 but x has dtype float16",
        ),
        (
            lambda: dropout(jax.random.key(0), X, 1.5, train=True),
            ValueError,
            r"rate must be a float in \[0, 1\].*got 1.5",
        ),
        (lambda: dropout(jax.random.key(0), X, 0.5, train="yes"), TypeError, r"train must be a Python bool"),
        (lambda: dropout(None, X, 0.5, train=True), ValueError, r"key is None but train=True"),
        (lambda: softmax(X, axis=4), ValueError, r"axis must be an int in \[-4, 4\).*got 4"),
        (
            lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.array([0.0, 1.0])),
            TypeError,
            r"labels must be integer class indices, got dtype float32",
        ),
        (
            lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 3])),
            ValueError,
            r"labels\[1\] = 3 is outside \[0, 3\)",
        ),
        (
            lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 1, 2])),
            ValueError,
            r"labels has shape \(3,\), expected \(2,\)",
        ),
        (
            lambda: losses.mse(jnp.zeros(3), jnp.zeros(4)),
            ValueError,
            r"pred has shape \(3,\) but target has shape \(4,\)",
        ),
    ],
)
def test_ops_reject_bad_input_with_a_clear_message(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match="x has 3 channels"):
        jax.jit(conv2d).lower(X, jnp.zeros((4, 2, 3, 3)))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Conv2D(0, 3), ValueError, r"out_channels must be a positive int, got 0"),
        (lambda: Conv2D(4, (3, 3, 3)), ValueError, r"kernel_size must be an int or a pair of ints"),
        (lambda: Conv2D(4, 3, stride=0), ValueError, r"stride must be >= 1, got 0"),
        (lambda: Deconv2D(4, 3, stride=2, output_padding=2), ValueError, r"output_padding"),
        (lambda: Linear(-1), ValueError, r"out_features must be a positive int, got -1"),
        (lambda: Linear(3, w_init="nope"), ValueError, r"w_init must be a callable or one of"),
        (lambda: MaxPool2D(2, padding=3), ValueError, r"padding"),
        (lambda: Dropout(-0.1), ValueError, r"rate must be a float in \[0, 1\]"),
        (lambda: serial(Linear(3), "relu"), TypeError, r"serial: argument 1 must be a Layer"),
        (lambda: Conv2D(4, 3, bias=False), TypeError, r"bias"),
    ],
)
def test_layer_constructors_reject_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "layer, shape, match",
    [
        (Conv2D(4, 3), (None, 3, 8), r"Conv2D: input_shape must have 4 entries \(N, C, H, W\), got \(None, 3, 8\)"),
        (Conv2D(4, 9), (None, 3, 8, 8), r"Conv2D: kernel_size \(9, 9\) is larger than the padded input"),
        (MaxPool2D(4), (None, 3, 2, 2), r"MaxPool2D: window \(4, 4\) is larger"),
        (Linear(3), (None,), r"Linear: input_shape must be \(N, in_features\)"),
    ],
)
def test_init_rejects_incompatible_input_shapes(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer.init(jax.random.key(0), shape)


def test_serial_apply_rejects_params_of_another_model():
    model = serial(Linear(3), Linear(2))
    _, params = model.init(jax.random.key(0), (None, 4))
    with pytest.raises(
        ValueError, match=r"params must be a tuple with one entry per layer \(2\), got a tuple of length 1"
    ):
        model.apply(params[:1], jnp.zeros((1, 4)))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: linear(jnp.zeros((2, 3), jnp.int32), jnp.zeros((3, 5))), r"^linear: x must have a floating dtype"),
        (lambda: relu("x"), r"^relu: x must be an array"),
        (lambda: softmax(X, axis=4), r"^softmax: axis must be an int in \[-4, 4\)"),
        (lambda: softmax(X, axis=1.0), r"^softmax: axis must be an int"),
        (lambda: log_softmax(jnp.zeros((2, 0)), axis=1), r"^log_softmax: x has shape \(2, 0\)"),
        (lambda: dropout(jax.random.key(0), X, 1.5, train=True), r"^dropout: rate must be a float in \[0, 1\]"),
        (
            lambda: losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 3])),
            r"^softmax_cross_entropy: labels\[1\] = 3",
        ),
        (lambda: losses.mse(jnp.zeros(3, jnp.int32), jnp.zeros(3)), r"^mse: pred must have a floating dtype"),
        (lambda: Linear(0), r"^Linear: out_features must be a positive int"),
        (lambda: Dropout(2.0), r"^Dropout: rate must be a float"),
        (lambda: Softmax(axis="last"), r"^Softmax: axis must be an int"),
        (lambda: Linear(3).init(jax.random.key(0), (None, 0)), r"^Linear: input_shape must hold positive ints"),
    ],
)
def test_messages_start_with_the_op_or_layer_name(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize(
    "model_name, shape",
    [
        ("lenet5", (None, 28, 28, 1)),
        ("lenet5", (8, 32, 32, 3)),
        ("lenet5", (None, 32, 48, 3)),
        ("wide_cnn", (None, 28, 28, 1)),
        ("wide_cnn", (8, 32, 32, 3)),
    ],
)
def test_a_channels_last_input_shape_is_named_at_the_first_layer(model_name, shape):
    import re

    from tinyfn.models import get_model

    with pytest.raises(
        ValueError,
        match=r"^Conv2D: input_shape "
        + re.escape(str(shape))
        + r" looks channels-last \(N, H, W, C\); tinyfn expects \(N, C, H, W\)",
    ):
        get_model(model_name).init(jax.random.key(0), shape)
    with pytest.raises(ValueError, match=r"^MaxPool2D: input_shape \(None, 28, 28, 1\) looks channels-last"):
        MaxPool2D(2).init(jax.random.key(0), (None, 28, 28, 1))


@pytest.mark.parametrize(
    "layer, shape",
    [
        (Conv2D(4, (5, 1)), (None, 16, 100, 1)),  # a 1-D signal laid out (N, C, T, 1)
        (Conv2D(4, 3, padding=1), (None, 3, 32, 32)),
        (Conv2D(4, 3), (None, 1, 4, 4)),
        (MaxPool2D(2), (None, 16, 4, 4)),
    ],
)
def test_channels_first_shapes_are_not_mistaken_for_channels_last(layer, shape):
    layer.init(jax.random.key(0), shape)
