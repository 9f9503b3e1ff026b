"""Every kernel path of the conv and pool ops is exercised: a recorder notes the path of each traced product."""

import itertools

import jax

from tinyfn.cli import gradcheck_cases as _gradcheck_cases
from tinyfn.layers import FORMULATIONS, kernels

CONV_PRODUCTS = ("W X*", "W*ᵀ g", "g X*ᵀ")
POOL_GEOMETRIES = ("tiled", "tiled-remainder", "overlapping", "gapped", "padded")
EVERY_PATH = (
    {(op, product, path) for op in ("conv2d", "deconv2d") for product in CONV_PRODUCTS for path in (*FORMULATIONS, "im2col-chunked")}
    | {("max_pool2d", "argmax", name) for name in FORMULATIONS}
    | {("max_pool2d", "Sᵀ g", geometry) for geometry in POOL_GEOMETRIES}
)


def _trace_value_and_vjp(case):
    def value_and_vjp(*args):
        y, vjp = jax.vjp(case.f, *args)
        return y, vjp(y)

    jax.make_jaxpr(value_and_vjp)(*case.args)


def test_the_gradcheck_case_table_takes_every_kernel_path():
    """The table that ``python -m tinyfn gradcheck`` (and test_gradcheck) runs: forward and backward of each case."""
    with kernels.record_paths() as paths:
        for case in _gradcheck_cases.cases():
            if case.op in ("conv2d", "deconv2d", "max_pool2d", "max_pool2d_with_switches"):
                _trace_value_and_vjp(case)
    missing = EVERY_PATH - set(paths)
    assert not missing, f"kernel paths no case takes: {sorted(missing)}"


def test_the_recorder_notices_a_path_that_was_not_taken():
    with kernels.record_paths() as paths:
        for case in itertools.islice((c for c in _gradcheck_cases.cases() if c.op == "conv2d"), 1):
            _trace_value_and_vjp(case)
    assert set(paths) and EVERY_PATH - set(paths)
    assert all(p in EVERY_PATH for p in paths)  # and every recorded path is one the table above knows
