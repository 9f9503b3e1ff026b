"""Every op and every layer behaves the same under ``jit`` and without, against ``tinyfn.reference``."""

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np

from tinyfn import losses, reference as R
from tinyfn import layers as L

_rng = np.random.default_rng(0)
X4 = jnp.asarray(_rng.permutation(2 * 2 * 5 * 5).reshape(2, 2, 5, 5) * 0.1 - 2.5, jnp.float32)  # distinct: no pooling ties
W4 = jnp.asarray(_rng.standard_normal((3, 2, 3, 3)), jnp.float32)
B3 = jnp.asarray(_rng.standard_normal(3), jnp.float32)
X2 = jnp.asarray(_rng.standard_normal((4, 5)), jnp.float32)
W2 = jnp.asarray(_rng.standard_normal((5, 3)), jnp.float32)
LABELS = jnp.array([0, 2, 1, 2])
KEY = jax.random.key(7)

OPS = [
    # (name, ours, reference, args)
    ("linear", L.linear, R.linear, (X2, W2, B3)),
    ("conv2d", partial(L.conv2d, stride=2, padding=1), partial(R.conv2d, stride=2, padding=1), (X4, W4, B3)),
    ("deconv2d", partial(L.deconv2d, stride=2, output_padding=1), partial(R.deconv2d, stride=2, output_padding=1), (X4, W4.transpose(1, 0, 2, 3), B3)),
    ("max_pool2d", partial(L.max_pool2d, window=2, stride=1, padding=1), partial(R.max_pool2d, window=2, stride=1, padding=1), (X4,)),
    ("max_pool2d_with_switches", partial(L.max_pool2d_with_switches, window=2), partial(R.max_pool2d_with_switches, window=2), (X4,)),
    ("relu", L.relu, R.relu, (X2,)),
    ("softmax", partial(L.softmax, axis=0), partial(R.softmax, axis=0), (X2,)),
    ("log_softmax", L.log_softmax, R.log_softmax, (X2,)),
    ("flatten", L.flatten, R.flatten, (X4,)),
    ("dropout", partial(L.dropout, KEY, rate=0.5, train=True), partial(R.dropout, KEY, rate=0.5, train=True), (X2,)),
    ("softmax_cross_entropy", losses.softmax_cross_entropy, R.softmax_cross_entropy, (X2[:, :3], LABELS)),
    ("mse", losses.mse, R.mse, (X2, X2[::-1])),
]

LAYERS = [
    # (layer, input shape)
    (L.Linear(3), (4, 5)),
    (L.Conv2D(3, 3, stride=2, padding=1), (2, 2, 5, 5)),
    (L.Deconv2D(3, 3, stride=2, output_padding=1), (2, 2, 5, 5)),
    (L.MaxPool2D(2, stride=1), (2, 2, 5, 5)),
    (L.ReLU(), (4, 5)),
    (L.Softmax(), (4, 5)),
    (L.LogSoftmax(axis=0), (4, 5)),
    (L.Flatten(), (2, 2, 5, 5)),
    (L.Dropout(0.5), (4, 5)),
    (L.serial(L.Conv2D(2, 3, padding=1), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dropout(0.25), L.Linear(3), L.LogSoftmax()), (2, 2, 5, 5)),
]


class OpsUnderJitAndWithout(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_every_op_and_its_gradient_equal_the_reference(self):
        for name, ours, ref, args in OPS:
            with self.subTest(op=name):
                chex.assert_trees_all_close(self.variant(ours)(*args), ref(*args), rtol=1e-5, atol=1e-6)
                floats = tuple(i for i, a in enumerate(args) if jnp.issubdtype(a.dtype, jnp.floating))

                def loss(f, *a):
                    out = f(*a)
                    return sum(jnp.sum(jnp.sin(o)) for o in jax.tree_util.tree_leaves(out) if jnp.issubdtype(o.dtype, jnp.floating))

                chex.assert_trees_all_close(
                    self.variant(jax.grad(partial(loss, ours), argnums=floats))(*args),
                    jax.grad(partial(loss, ref), argnums=floats)(*args), rtol=1e-4, atol=1e-5,
                )  # fmt: skip


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
                grad = lambda p: jax.grad(lambda p: jnp.sum(jnp.sin(apply(p, x))))(p)  # noqa: E731
                chex.assert_trees_all_close(self.variant(grad)(params), grad(params), rtol=1e-5, atol=1e-6)
