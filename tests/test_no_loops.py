"""With the ``xla`` formulation a whole training step holds no loop (the slow path on GPU and TPU)."""

import jax
import jax.extend
import jax.numpy as jnp
import pytest

from tinyfn import losses, models
from tinyfn.layers import formulation

LOOPS = {"while", "scan", "cond"}


def _primitives(jaxpr, seen=None):
    """Every primitive name in ``jaxpr`` and in the jaxprs nested in its equations' params (jit, custom_vjp/jvp
    bodies, ...)."""
    seen = set() if seen is None else seen
    for eqn in jaxpr.eqns:
        seen.add(eqn.primitive.name)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    _primitives(sub.jaxpr, seen)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    _primitives(sub, seen)
    return seen


def _training_step_primitives(model, name):
    """Primitives of one SGD step (forward, handwritten backward, update) traced with formulation ``name``."""
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    x, labels, key = jnp.zeros((4, 1, 28, 28)), jnp.array([0, 1, 2, 3]), jax.random.key(1)

    def step(params):
        loss = lambda p: losses.softmax_cross_entropy(model.apply(p, x, key=key, train=True), labels)  # noqa: E731
        grads = jax.grad(loss)(params)
        return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)

    with formulation(name):
        return _primitives(jax.make_jaxpr(jax.jit(step))(params).jaxpr)


@pytest.mark.parametrize("model", [models.lenet5(), models.wide_cnn()], ids=["lenet5", "wide_cnn"])
def test_an_xla_training_step_has_no_loop_anywhere_in_its_jaxpr(model):
    prims = _training_step_primitives(model, "xla")
    assert "conv_general_dilated" in prims  # the walk reaches the rules' bodies
    assert not prims & LOOPS, sorted(prims & LOOPS)


def test_the_loop_detector_finds_the_loops_of_the_im2col_formulation():
    prims = _training_step_primitives(models.lenet5(), "im2col")
    assert "scan" in prims  # im2col's fori_loops (static trip counts: traced as scan)
