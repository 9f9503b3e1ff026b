"""The registry is complete, and registering an op alone puts it under every property check.

A public differentiable op of ``tinyfn.layers``/``tinyfn.losses`` missing from ``registry.OPS`` (and not in
the commented ``registry.SKIPPED``) fails ``test_every_public_op_is_registered_or_skipped``; a toy op registered
into a copy of the table passes every check of ``tinyfn.testing``, and one with a wrong rule is caught.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import _checks, layers, losses, registry, testing


def test_every_public_op_is_registered_or_skipped():
    assert registry.unregistered() == []


def test_a_missing_op_fails_the_coverage_check_by_name():
    without = [spec for spec in registry.OPS if spec.name != "global_avg_pool2d"]
    assert registry.unregistered(without) == ["tinyfn.layers.global_avg_pool2d"]


def test_the_skip_set_names_only_public_functions():
    public = {name for module in (layers, losses) for name in vars(module) if not name.startswith("_")}
    assert set(registry.SKIPPED) <= public
    assert not set(registry.SKIPPED) & {spec.name for spec in registry.OPS}


def test_register_op_refuses_a_second_op_of_one_name_and_a_non_spec():
    table = list(registry.OPS)
    with pytest.raises(ValueError, match="'relu' is already registered"):
        registry.register_op(registry.get_op("relu"), table=table)
    with pytest.raises(TypeError, match="spec must be an OpSpec, got function"):
        registry.register_op(layers.relu, table=table)
    with pytest.raises(ValueError, match=r"diff_argnums \(1,\) must be non-empty positions into argnames \('x',\)"):
        registry.OpSpec("bad", layers.relu, layers.relu, lambda r, d: None, ("x",), (1,))


# ---- a toy op: cube, with a handwritten rule ----


def _plain_cube(x):
    return x * x * x


def _cube_op(rule_factor):
    @jax.custom_vjp
    def cube(x):
        return _plain_cube(x)

    def fwd(x):  # the plain forward, so that forward mode runs through the rule
        return _plain_cube(x), x

    def bwd(x, g):
        return (rule_factor * x * x * g,)  # d(x³)/dx = 3x²; rule_factor 2 is the deliberate mistake

    cube.defvjp(fwd, bwd)

    def op(x):
        x = _checks.float_array("x", x, op="cube")
        return cube(x)

    return op


def _toy_spec(rule_factor):
    sample = lambda rng, dtype: registry.Sample((registry.normal(rng, (2, 3), dtype),), config="x(2, 3)")
    torch_cube = lambda x: x**3
    return registry.OpSpec(
        "cube", _cube_op(rule_factor), _plain_cube, sample, ("x",), (0,), torch=torch_cube, batch_argnums=(0,)
    )


def _every_check(spec):
    """Every property check of ``tinyfn.testing``, as the property tests run them."""
    sample = spec.sample(np.random.default_rng(0), np.float32)
    checks = {
        "jit": partial(testing.check_jit, spec, sample),
        "vmap": partial(testing.check_vmap, spec, sample),
        "vjp": partial(testing.check_vjp, spec, sample),
        "hessian": partial(testing.check_hessian, spec),
        "integer input": partial(testing.check_rejects_integer_input, spec, sample),
        "non-finite input": partial(testing.check_non_finite_input, spec, sample),
        "empty batch": partial(testing.check_empty_batch, spec, sample),
        **{dtype: partial(testing.check_dtype, spec, sample, dtype) for dtype in ("float16", "bfloat16")},
    }
    try:
        import torch  # noqa: F401

        checks["torch"] = partial(testing.check_torch, spec)
    except ImportError:
        pass
    return checks


def test_a_registered_toy_op_is_picked_up_and_passes_every_check():
    table = list(registry.OPS)
    spec = registry.register_op(_toy_spec(3.0), table=table)
    assert registry.get_op("cube", table) is spec and registry.get_op("cube", table) not in registry.OPS
    for check in _every_check(spec).values():
        check()  # raises, naming the op, on failure


def test_a_toy_op_with_a_wrong_rule_is_caught_by_every_check_that_compares_gradients():
    spec = _toy_spec(2.0)  # the rule gives 2x² g, the derivative is 3x² g
    checks = _every_check(spec)
    caught = {"jit", "vjp", "hessian", "float16", "bfloat16", "torch"} & set(checks)
    for name in caught:
        with pytest.raises(AssertionError, match="cube"):
            checks[name]()
    for name in set(checks) - caught:  # vmap compares with a loop, the adversarial checks do not differentiate
        checks[name]()


def test_a_toy_op_whose_rule_calls_itself_in_fwd_fails_the_hessian_check():
    @jax.custom_vjp
    def cube(x):
        return _plain_cube(x)

    cube.defvjp(lambda x: (cube(x), x), lambda x, g: (3 * x * x * g,))  # fwd calls the custom_vjp function itself
    spec = registry.OpSpec("cube", cube, _plain_cube, _toy_spec(3.0).sample, ("x",), (0,))
    testing.check_vjp(spec, spec.sample(np.random.default_rng(0), np.float32))  # reverse mode is fine
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        testing.check_hessian(spec)


def test_samples_give_random_configurations_then_the_fixed_ones():
    spec = registry.get_op("conv2d")
    got = list(registry.samples(spec, np.random.default_rng(0), repeats=2))
    assert len(got) == 2 + len(list(spec.fixed(np.random.default_rng(0))))
    assert all(s.args[0].dtype == jnp.float32 for s in got)
