"""Conv1D, GroupNorm, Upsample and Reshape equal their PyTorch modules (weights loaded), refuse impossible
geometries at init naming the arguments, and save and load inside a model.

The ops' rules are checked through the registry (``tests/test_op_*.py``: the reference's autodiff, float64 finite
differences, forward over reverse, float16/bfloat16, ``F.conv1d``/``F.group_norm``/``F.interpolate``); here the
layers, as a user builds them, against ``nn.Conv1d``, ``nn.GroupNorm``, ``nn.Upsample`` and ``Tensor.reshape``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import layers as L

torch = pytest.importorskip("torch")


def _torch_case(layer, module, shape, load):
    """``layer`` and ``module`` (with ``load(params)`` copied into it) agree on output and on the gradient of
    ``Σ y·c`` with respect to the input and every parameter, float32; the output shape is what ``init`` declared."""
    out_shape, params = layer.init(jax.random.key(0), shape)
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape), params)
    x = np.asarray(jax.random.normal(jax.random.key(1), shape))
    y = layer.apply(params, jnp.asarray(x))
    assert y.shape == out_shape
    c = np.asarray(jax.random.normal(jax.random.key(2), y.shape))
    gx, gp = jax.grad(lambda x, p: jnp.sum(layer.apply(p, x) * c), argnums=(0, 1))(jnp.asarray(x), params)
    with torch.no_grad():
        for name, value in load(params).items():
            getattr(module, name).copy_(torch.tensor(np.asarray(value)))
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    (ty * torch.tensor(c)).sum().backward()
    np.testing.assert_allclose(np.asarray(y), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gx), tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    theirs = {name: getattr(module, name).grad.numpy() for name in load(params)}
    for name, ours in load(gp).items():
        np.testing.assert_allclose(np.asarray(ours), theirs[name], rtol=1e-5, atol=1e-5)


def test_conv1d_layer_equals_nn_conv1d_with_its_weights_loaded():
    module = torch.nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2)
    _torch_case(
        L.Conv1D(4, 3, stride=2, padding=1, dilation=2),
        module,
        (2, 3, 11),
        lambda p: {"weight": p["w"], "bias": p["b"]},
    )


def test_group_norm_layer_equals_nn_group_norm_with_its_weights_loaded():
    module = torch.nn.GroupNorm(2, 6, eps=1e-5)
    _torch_case(L.GroupNorm(2), module, (2, 6, 3, 4), lambda p: {"weight": p["gamma"], "bias": p["beta"]})


@pytest.mark.parametrize("scale", [2, (2, 3)])
def test_upsample_layer_equals_nn_upsample_nearest(scale):
    module = torch.nn.Upsample(scale_factor=tuple(float(s) for s in np.broadcast_to(scale, 2)), mode="nearest")
    _torch_case(L.Upsample(scale), module, (2, 3, 3, 4), lambda p: {})


def test_reshape_layer_equals_torch_reshape_per_example():
    class Reshape(torch.nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], 4, -1)

    _torch_case(L.Reshape((4, -1)), Reshape(), (2, 3, 2, 4), lambda p: {})


def test_upsample_backward_is_the_sum_over_each_block():
    g = jnp.arange(2 * 6, dtype=jnp.float32).reshape(1, 1, 2, 6)  # blocks of 1 × 3 for scale (1, 3)
    _, pullback = jax.vjp(lambda x: L.upsample_nearest2d(x, (1, 3)), jnp.zeros((1, 1, 2, 2)))
    np.testing.assert_array_equal(pullback(g)[0][0, 0], [[0 + 1 + 2, 3 + 4 + 5], [6 + 7 + 8, 9 + 10 + 11]])


def test_group_norm_with_one_group_is_layer_norm_over_each_sample_and_with_c_groups_instance_norm():
    x = jax.random.normal(jax.random.key(0), (2, 4, 3, 3))
    np.testing.assert_allclose(L.group_norm(x, num_groups=1), L.layer_norm(x, normalized_ndim=3), atol=1e-6)
    instance = torch.nn.functional.instance_norm(torch.tensor(np.asarray(x)), eps=1e-5).numpy()
    np.testing.assert_allclose(L.group_norm(x, num_groups=4), instance, atol=1e-5)


@pytest.mark.parametrize(
    "layer, shape, pattern",
    [
        (
            lambda: L.Reshape((3, -1)),
            (2, 4, 5),
            r"Reshape: cannot reshape 20 numbers .*\(3, -1\): 20 is not a multiple of 3 \(input_shape \(2, 4, 5\)",
        ),
        (lambda: L.Reshape((3, 7)), (2, 4, 5), r"Reshape: cannot reshape 20 numbers .*\(3, 7\), which holds 21"),
        (lambda: L.GroupNorm(4), (2, 6, 3, 3), r"GroupNorm: num_groups 4 must divide the number of channels C = 6"),
        (lambda: L.Conv1D(2, 4, dilation=3), (2, 3, 5), r"Conv1D: kernel_size 4 with dilation 3 spans 10"),
        (lambda: L.Conv1D(2, 3), (2, 3, 5, 5), r"Conv1D: input_shape must have 3 entries"),
        (lambda: L.Upsample(2), (2, 3, 5), r"Upsample: input_shape must have 4 entries"),
    ],
)
def test_an_impossible_geometry_is_refused_at_init_naming_the_arguments(layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer().init(jax.random.key(0), shape)


@pytest.mark.parametrize(
    "build, pattern",
    [
        (
            lambda: L.Reshape((2, -1, -1)),
            r"Reshape: shape must hold positive ints and at most one -1, got \(2, -1, -1\)",
        ),
        (lambda: L.Reshape((0, 4)), r"Reshape: shape must hold positive ints"),
        (lambda: L.GroupNorm(0), r"GroupNorm: num_groups must be a positive int, got 0"),
        (lambda: L.Conv1D(2, 3, dilation=0), r"Conv1D: dilation must be >= 1, got 0"),
        (lambda: L.Upsample(0), r"Upsample: scale_factor must be >= 1, got 0"),
    ],
)
def test_a_bad_constructor_argument_is_refused_naming_it(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


def test_the_ops_name_their_bad_arguments():
    with pytest.raises(ValueError, match=r"group_norm: num_groups 3 must divide the number of channels C = 4"):
        L.group_norm(jnp.ones((2, 4, 3)), num_groups=3)
    with pytest.raises(ValueError, match=r"conv1d: x has 2 channels .* but w expects 3"):
        L.conv1d(jnp.ones((1, 2, 5)), jnp.ones((4, 3, 2)))
    with pytest.raises(ValueError, match=r"reshape: cannot reshape 6 numbers per example into \(4, -1\)"):
        L.reshape(jnp.ones((2, 2, 3)), (4, -1))


def test_a_model_with_the_new_layers_saves_and_loads_as_data():
    model = L.serial(
        L.Conv1D(4, 3, padding=1, dilation=2), L.GroupNorm(2), L.Reshape((4, 2, -1)), L.Upsample((1, 2)), L.Flatten()
    )
    _, params = model.init(jax.random.key(0), (None, 3, 8))
    rebuilt = L.from_spec(L.to_spec(model))
    assert repr(rebuilt) == repr(model)
    x = jax.random.normal(jax.random.key(1), (2, 3, 8))
    np.testing.assert_array_equal(rebuilt.apply(params, x), model.apply(params, x))
