"""Every layer behaves the same under ``jit`` and without (chex variants).

Every op, against ``tinyfn.reference``, with and without ``jit``: ``tests/test_op_properties.py``
(``test_op_and_its_gradient_equal_the_reference_with_and_without_jit``, over ``tinyfn.registry.OPS``).
"""

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np

from tinyfn import layers as L, registry

KEY = jax.random.key(7)

LAYERS = [
    # (layer, input shape): the layer of every registered op that has one, and a whole model
    *((spec.layer(), spec.input_shape) for spec in registry.OPS if spec.layer is not None),
    (
        L.serial(
            L.Conv2D(2, 3, padding=1),
            L.ReLU(),
            L.MaxPool2D(2),
            L.Flatten(),
            L.Dropout(0.25),
            L.Linear(3),
            L.LogSoftmax(),
        ),
        (2, 2, 5, 5),
    ),
]


class LayersUnderJitAndWithout(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_every_layer_gives_the_same_output_and_params_gradient(self):
        for layer, shape in LAYERS:
            with self.subTest(layer=layer.name):
                out_shape, params = layer.init(jax.random.key(0), shape)
                x = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
                apply = partial(layer.apply, key=KEY, train=True)
                eager = apply(params, x)
                chex.assert_shape(eager, out_shape)
                chex.assert_trees_all_close(self.variant(apply)(params, x), eager, rtol=1e-5, atol=1e-6)
                # grad closes over this iteration's apply and x, and only runs within this iteration
                grad = lambda p: jax.grad(lambda p: jnp.sum(jnp.sin(apply(p, x))))(p)  # noqa: E731, B023
                chex.assert_trees_all_close(self.variant(grad)(params), grad(params), rtol=1e-5, atol=1e-6)


def test_the_layer_list_holds_every_registered_layer():
    names = {layer.name for layer, _ in LAYERS}
    assert {"Linear", "Conv2D", "Deconv2D", "MaxPool2D", "ReLU", "AvgPool2D", "GlobalAvgPool2D"} <= names, names
