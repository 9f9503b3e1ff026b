"""Every op in ``tinyfn.registry.OPS``: its handwritten VJP equals autodiff of the reference (float32), central
finite differences (float64) and PyTorch's (float64, where the op's spec has a PyTorch oracle), and so does every
fixed configuration of the table (each kernel path of the conv and pool ops)."""

import numpy as np
import pytest

from tinyfn import registry, testing

IDS = [spec.name for spec in registry.OPS]


def _sample(spec):
    return spec.sample(np.random.default_rng(0), np.float32)


@pytest.mark.parametrize("spec", registry.OPS, ids=IDS)
def test_vjp_equals_reference_autodiff_and_float64_finite_differences(spec):
    testing.check_vjp(spec, _sample(spec))


@pytest.mark.parametrize(
    "spec", [s for s in registry.OPS if s.torch is not None], ids=[s.name for s in registry.OPS if s.torch is not None]
)
def test_forward_and_vjp_equal_pytorch(spec):
    pytest.importorskip("torch")
    testing.check_torch(spec)


FIXED = [
    (spec, i, sample)
    for spec in registry.OPS
    if spec.torch is not None and spec.fixed is not None
    for i, sample in enumerate(spec.fixed(np.random.default_rng(0)))
]


@pytest.mark.parametrize("spec, i, sample", FIXED, ids=[f"{s.name}-{i}" for s, i, _ in FIXED])
def test_every_fixed_configuration_equals_pytorch(spec, i, sample):
    pytest.importorskip("torch")
    testing.check_torch(spec, sample=sample)
