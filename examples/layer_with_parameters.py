"""A layer with parameters of your own: its op with a handwritten ``custom_vjp`` rule, checked, then trained.

``channel_affine(x, gamma, beta) = gamma · x + beta`` per channel (NCHW). Its rule follows the first law:
the map is diagonal in ``x`` (``dx = gamma · g``) and linear in ``gamma`` and ``beta`` (``dgamma = Σ g · x``,
``dbeta = Σ g``, summed over batch and pixels). ``tinyfn.gradcheck.check_vjp`` compares the rule with JAX's
autodiff of a plain reference and with float64 finite differences; registered as an ``OpSpec`` (in a table of its
own here), it goes through ``tinyfn.testing``'s property checks (jit, vmap, forward over reverse) as the built-in ops
do; ``register_layer`` lets ``to_spec``/``from_spec`` (and checkpoints) rebuild it; the layer then trains inside
``serial``.
About 10 s on two CPU cores (``TINYFN_EXAMPLE_QUICK=1``: fewer steps).

    python examples/layer_with_parameters.py
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn import gradcheck, layers as L, losses, registry, testing, train
from tinyfn.layers import Layer, make_layer

STEPS = 20 if os.environ.get("TINYFN_EXAMPLE_QUICK") == "1" else 200


def _plain(x, gamma, beta):
    return gamma[None, :, None, None] * x + beta[None, :, None, None]


@jax.custom_vjp
def channel_affine(x, gamma, beta):
    return _plain(x, gamma, beta)


def _fwd(x, gamma, beta):  # the plain forward, not channel_affine itself: jax.hessian can run through the rule
    return _plain(x, gamma, beta), (x, gamma)


def _bwd(res, g):
    x, gamma = res
    dx = gamma[None, :, None, None] * g  # Law 1: Y = D X with D = diag(gamma)  =>  dX = Dᵀ g
    return dx, (g * x).sum(axis=(0, 2, 3)), g.sum(axis=(0, 2, 3))  # Law 1 in gamma and in beta


channel_affine.defvjp(_fwd, _bwd)


def ChannelAffine() -> Layer:
    """Params ``{"gamma": (C,), "beta": (C,)}``, starting at the identity map."""

    def init(key, input_shape):
        del key
        if len(input_shape) != 4:
            raise ValueError(f"ChannelAffine: input_shape must be (N, C, H, W), got {tuple(input_shape)}")
        channels = input_shape[1]
        return input_shape, {"gamma": jnp.ones(channels), "beta": jnp.zeros(channels)}

    def apply(params, x, *, key=None, train=False):
        return channel_affine(x, params["gamma"], params["beta"])

    return make_layer("ChannelAffine", init, apply)  # wraps apply in the params check: wrong params are named


def _sample(rng, dtype):
    shapes = ((2, 3, 4, 4), (3,), (3,))
    return registry.Sample(tuple(registry.normal(rng, s, dtype) for s in shapes))


SPEC = registry.OpSpec("channel_affine", channel_affine, _plain, _sample, ("x", "gamma", "beta"), (0, 1, 2))


def check_and_register():
    """The rule against the reference and finite differences, the property checks, the layer in the spec registry."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    args = jax.random.normal(k1, (2, 3, 4, 4)), jax.random.normal(k2, (3,)), jax.random.normal(k3, (3,))
    print(gradcheck.check_vjp(channel_affine, args, reference=_plain, argnames=("x", "gamma", "beta")))  # raises if off
    mine: list[registry.OpSpec] = []
    registry.register_op(SPEC, table=mine)  # registry.register_op(SPEC) would add it to tinyfn's own OPS
    sample = SPEC.sample(np.random.default_rng(0), np.float32)
    for check in (testing.check_jit, testing.check_vmap, testing.check_vjp):
        check(mine[0], sample)  # each raises, naming the op and the sample, if the rule disagrees
    testing.check_hessian(SPEC)  # forward over reverse runs through the rule (its fwd does not call itself)
    L.register_layer("ChannelAffine", ChannelAffine)  # to_spec / from_spec / checkpoints can rebuild it now
    assert L.from_spec(L.to_spec(L.serial(ChannelAffine(), L.ReLU()))).children[0].name == "ChannelAffine"


def main():
    check_and_register()

    model = L.serial(L.Conv2D(4, 3, padding=1), ChannelAffine(), L.ReLU(), L.Flatten(), L.Linear(2))
    _, params = model.init(jax.random.key(1), (None, 1, 8, 8))
    images = jax.random.normal(jax.random.key(2), (64, 1, 8, 8))
    labels = (images[:, 0, :4].mean(axis=(1, 2)) > images[:, 0, 4:].mean(axis=(1, 2))).astype(
        jnp.int32
    )  # top brighter?
    opt = train.sgd(0.05, momentum=0.9)
    step = train.make_train_step(model, losses.softmax_cross_entropy, opt)
    opt_state, losses_seen = opt.init(params), []
    for i in range(STEPS):
        params, opt_state, metrics = step(params, opt_state, images, labels, jax.random.key(i))
        losses_seen.append(float(metrics["loss"]))
    print(
        f"layer_with_parameters: check_vjp passed; loss {losses_seen[0]:.4f} -> {losses_seen[-1]:.4f} in {STEPS} steps"
    )


if __name__ == "__main__":
    main()
