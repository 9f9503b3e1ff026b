"""Forward over reverse through every op in ``tinyfn.registry.OPS``: ``jax.hessian`` and ``jax.jacfwd(jax.grad)``
run through the handwritten rule (its ``fwd`` calls the plain forward) and equal the reference's in float64.

This is the test that makes README's "hessian through every op" true; whole models: ``test_forward_mode.py``.
"""

import pytest

from tinyfn import registry, testing

IDS = [spec.name for spec in registry.OPS]


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_hessian_and_jacfwd_of_grad_equal_the_reference_in_float64(spec):
    testing.check_hessian(spec)
