"""Every layer checks its params tree against what its init makes, at trace time, and names the wrong entry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import _checks
from tinyfn.layers import Conv2D, Deconv2D, Dropout, Flatten, Linear, MaxPool2D, ReLU, Softmax, serial
from tinyfn.models import lenet5

X4 = jnp.ones((2, 3, 8, 8))


def _params(layer, shape):
    return layer.init(jax.random.key(0), shape)[1]


def test_conv2d_refuses_a_misspelled_bias_key_instead_of_dropping_it():
    layer = Conv2D(4, 3)
    p = _params(layer, (None, 3, 8, 8))
    with pytest.raises(ValueError, match=r"^Conv2D: params lacks 'b' and has unexpected 'bias'; expected keys \['b', 'w'\]"):
        layer.apply({"w": p["w"], "bias": p["b"] + 5}, X4)


def test_conv2d_names_a_missing_weight_instead_of_a_bare_key_error():
    layer = Conv2D(4, 3)
    p = _params(layer, (None, 3, 8, 8))
    with pytest.raises(ValueError, match=r"^Conv2D: params lacks 'w'"):
        layer.apply({"b": p["b"]}, X4)


@pytest.mark.parametrize(
    "layer, x, bad, match",
    [
        (Linear(4), jnp.ones((2, 5)), lambda p: {**p, "w": p["w"][:3]}, r"^Linear: params\['w'\] has shape \(3, 4\), expected \(5, 4\)"),
        (Linear(4), jnp.ones((2, 5)), lambda p: {**p, "b": p["b"].astype(jnp.int32)}, r"^Linear: params\['b'\] has dtype int32, expected a floating dtype"),
        (Linear(4), jnp.ones((2, 5)), lambda p: (p["w"], p["b"]), r"^Linear: params must be a dict with keys \['b', 'w'\]"),
        (Linear(4, use_bias=False), jnp.ones((2, 5)), lambda p: {**p, "b": jnp.zeros(4)}, r"^Linear: params has unexpected 'b'"),
        (Deconv2D(2, 3), X4, lambda p: {**p, "w": p["w"].transpose(1, 0, 2, 3)}, r"^Deconv2D: params\['w'\] has shape \(2, 3, 3, 3\), expected \(3, 2, 3, 3\)"),
        (MaxPool2D(2), X4, lambda p: {"w": jnp.ones(3)}, r"^MaxPool2D: params must be empty"),
        (ReLU(), X4, lambda p: {"w": jnp.ones(3)}, r"^ReLU: params must be empty"),
        (Softmax(), X4, lambda p: [jnp.ones(3)], r"^Softmax: params must be empty"),
        (Flatten(), X4, lambda p: {"w": jnp.ones(3)}, r"^Flatten: params must be empty"),
        (Dropout(0.5), X4, lambda p: {"w": jnp.ones(3)}, r"^Dropout: params must be empty"),
    ],
)
def test_every_layer_names_the_wrong_params_entry_eagerly_and_under_jit(layer, x, bad, match):
    p = bad(_params(layer, x.shape))
    with pytest.raises((ValueError, TypeError), match=match):
        layer.apply(p, x)
    with pytest.raises((ValueError, TypeError), match=match):
        jax.jit(layer.apply).lower(p, x)


def test_parameterless_layers_accept_any_empty_params():
    for empty in ({}, (), None):
        np.testing.assert_array_equal(ReLU().apply(empty, -X4), jnp.zeros_like(X4))


def test_a_whole_model_cast_to_float64_passes_the_check(x64):
    model = lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    params64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    assert model.apply(params64, jnp.ones((1, 1, 28, 28), jnp.float64)).dtype == jnp.float64


def test_serial_names_the_layer_and_the_entry_of_a_wrong_child():
    model = lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    params = list(params)
    params[7] = {**params[7], "w": params[7]["w"][:, :100]}  # Linear(120)
    with pytest.raises(ValueError, match=r"^serial: params\[7\]\['w'\] \(layer 7, Linear\) has shape \(400, 100\), expected \(400, 120\)"):
        model.apply(tuple(params), jnp.ones((2, 1, 28, 28)))
    swapped = list(params)
    swapped[0], swapped[3] = swapped[3], swapped[0]
    with pytest.raises(ValueError, match=r"^serial: params\[0\]\['b'\] \(layer 0, Conv2D\) has shape \(16,\), expected \(6,\)"):
        model.apply(tuple(swapped), jnp.ones((2, 1, 28, 28)))


def test_the_check_runs_once_per_input_shape_and_at_trace_time_only():
    calls = []
    layer = Linear(3)

    def counting_init(key, shape):
        calls.append(shape)
        return layer.init(key, shape)

    p = _params(layer, (None, 4))
    for _ in range(3):
        _checks.layer_params(counting_init, p, jnp.ones((2, 4)), op="Linear")
    _checks.layer_params(counting_init, p, jnp.ones((5, 4)), op="Linear")
    assert calls == [(2, 4), (5, 4)]  # cached per input shape

    traces = []

    @jax.jit
    def step(p, x):
        traces.append(1)
        return layer.apply(p, x)

    step(p, jnp.ones((2, 4)))
    step(p, jnp.ones((2, 4)))
    assert len(traces) == 1  # under jit the check is part of tracing, not of the compiled step
