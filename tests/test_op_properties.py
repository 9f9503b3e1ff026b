"""Every op in ``tinyfn.registry.OPS`` has every property of ``tinyfn.testing``: one test per op and property.

jit and no-jit agree with the reference, ``vmap`` equals a loop, the handwritten VJP equals autodiff of the
reference (float32) and central differences (float64), forward over reverse (``jax.hessian``,
``jax.jacfwd(jax.grad)``) equals the reference's in float64, PyTorch agrees where it has the op, adversarial
arguments are refused or run cleanly, and float16/bfloat16 runs are within ``testing.DTYPE_TOLERANCE``.
Registering an op puts it under all of them (``tests/test_registry.py`` shows it with a toy op).
"""

import numpy as np
import pytest

from tinyfn import registry, testing

IDS = [spec.name for spec in registry.OPS]
LOW_PRECISION = [(spec, dtype) for spec in registry.OPS for dtype in ("float16", "bfloat16") if dtype in spec.dtypes]


def _sample(spec):
    return spec.sample(np.random.default_rng(0), np.float32)


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_op_and_its_gradient_equal_the_reference_with_and_without_jit(spec):
    testing.check_jit(spec, _sample(spec))


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_vmap_of_op_and_vjp_equals_a_loop(spec):
    testing.check_vmap(spec, _sample(spec))


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_vjp_equals_reference_autodiff_and_float64_finite_differences(spec):
    testing.check_vjp(spec, _sample(spec))


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_hessian_and_jacfwd_of_grad_equal_the_reference_in_float64(spec):
    testing.check_hessian(spec)


@pytest.mark.parametrize(
    "spec", [s for s in registry.OPS if s.torch is not None], ids=[s.name for s in registry.OPS if s.torch is not None]
)
def test_forward_and_vjp_equal_pytorch(spec):
    pytest.importorskip("torch")
    testing.check_torch(spec)


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_an_integer_array_is_refused_naming_the_op(spec):
    testing.check_rejects_integer_input(spec, _sample(spec))


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_nan_and_inf_inputs_run_with_the_clean_shapes(spec):
    testing.check_non_finite_input(spec, _sample(spec))


@pytest.mark.parametrize("spec, dtype", LOW_PRECISION, ids=[f"{s.name}-{d}" for s, d in LOW_PRECISION])
def test_low_precision_forward_and_vjp_within_the_dtype_tolerance(spec, dtype):
    testing.check_dtype(spec, _sample(spec), dtype)
