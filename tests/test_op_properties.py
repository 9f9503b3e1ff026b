"""Every op in ``tinyfn.registry.OPS`` under jit and vmap and at adversarial arguments: one test per op and property.

jit and no-jit agree with the reference, ``vmap`` of the op and of its VJP equals a loop, an integer array is
refused naming the op (eagerly and under jit), an empty batch gives empty outputs or a clear error, NaN and inf
inputs run with the clean shapes. The other properties, over the same table: ``test_op_gradients.py`` (VJP
against the reference, finite differences, PyTorch), ``test_op_hessians.py`` (forward over reverse),
``test_op_low_precision.py`` (float16, bfloat16). Registering an op puts it under all of them
(``tests/test_registry.py`` shows it with a toy op).
"""

import numpy as np
import pytest

from tinyfn import registry, testing

IDS = [spec.name for spec in registry.OPS]


def _sample(spec):
    return spec.sample(np.random.default_rng(0), np.float32)


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_op_and_its_gradient_equal_the_reference_with_and_without_jit(spec):
    testing.check_jit(spec, _sample(spec))


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_vmap_of_op_and_vjp_equals_a_loop(spec):
    testing.check_vmap(spec, _sample(spec))


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_an_integer_array_is_refused_naming_the_op(spec):
    testing.check_rejects_integer_input(spec, _sample(spec))


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_an_empty_batch_gives_empty_outputs_or_a_clear_error(spec):
    testing.check_empty_batch(spec, _sample(spec))


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_nan_and_inf_inputs_run_with_the_clean_shapes(spec):
    testing.check_non_finite_input(spec, _sample(spec))
