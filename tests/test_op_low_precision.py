"""Every op in ``tinyfn.registry.OPS`` in float16 and bfloat16 (where its spec lists the dtype): forward and VJP
against the reference on the same rounded inputs, within ``tinyfn.testing.DTYPE_TOLERANCE``, the table of the
tolerance per dtype."""

import numpy as np
import pytest

from tinyfn import registry, testing

LOW_PRECISION = [(spec, dtype) for spec in registry.OPS for dtype in ("float16", "bfloat16") if dtype in spec.dtypes]


def _sample(spec):
    return spec.sample(np.random.default_rng(0), np.float32)


@pytest.mark.parametrize("spec, dtype", LOW_PRECISION, ids=[f"{s.name}-{d}" for s, d in LOW_PRECISION])
def test_low_precision_forward_and_vjp_within_the_dtype_tolerance(spec, dtype):
    testing.check_dtype(spec, _sample(spec), dtype)
