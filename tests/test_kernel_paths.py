"""Every kernel path of the conv and pool ops is exercised: a recorder notes the path of each traced product."""

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tinyfn.layers
from tinyfn import reference as R
from tinyfn.cli import gradcheck_cases as _gradcheck_cases
from tinyfn.layers import FORMULATIONS, conv_output_size, kernels

CONV_PRODUCTS = ("W X*", "W*ᵀ g", "g X*ᵀ")
POOL_GEOMETRIES = ("tiled", "tiled-remainder", "overlapping", "gapped", "padded")
EVERY_PATH = (
    {
        (op, product, path)
        for op in ("conv2d", "deconv2d")
        for product in CONV_PRODUCTS
        for path in (*FORMULATIONS, "im2col-chunked")
    }
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


# ----------------------------------------------------------------------------- the chunked im2col path whose
# chunk count does not divide the batch: 7 images in 3 chunks of 3, the last two of them zero padding

_CHUNKED = {  # op: (x shape, w shape, keyword arguments); both give X* of 22,680 float32 bytes
    "conv2d": ((7, 3, 9, 8), (4, 3, 3, 2), dict(stride=(2, 1), padding=1)),
    "deconv2d": ((7, 3, 5, 9), (3, 3, 3, 2), dict(stride=(2, 1), padding=1)),
}


@pytest.mark.parametrize("op", sorted(_CHUNKED))
def test_a_chunk_count_that_does_not_divide_the_batch_gives_each_image_its_own_output_and_gradient(rng, op):
    """Batch padding is cropped from the right end: every image's output and input gradient equal the reference's."""
    x_shape, w_shape, kw = _CHUNKED[op]
    x, w = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (x_shape, w_shape))
    f = partial(getattr(tinyfn.layers, op), chunk_bytes=8000, formulation="im2col", **kw)
    ref = partial(getattr(R, op), **kw)
    # the forward's (and the backward's) X* for these shapes: 22,680 bytes / 8,000 -> 3 chunks, which 7 does not divide
    small_hw = conv_output_size(x_shape[2:], w_shape[2:], kw["stride"], (1, 1)) if op == "conv2d" else x_shape[2:]
    assert kernels.n_chunks((7, 3), w_shape[2:], small_hw, 4, 8000) == 3
    y_ref, vjp_ref = jax.vjp(lambda a: ref(a, w), x)
    g = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)
    with kernels.record_paths() as paths:
        y, vjp = jax.vjp(lambda a: f(a, w), x)
        (dx,) = vjp(g)
    assert {(p, path) for o, p, path in paths if o == op} >= {("W X*", "im2col-chunked"), ("W*ᵀ g", "im2col-chunked")}
    (dx_ref,) = vjp_ref(g)
    for i in range(7):
        np.testing.assert_allclose(y[i], y_ref[i], rtol=1e-5, atol=1e-5, err_msg=f"{op}: image {i}'s output")
        np.testing.assert_allclose(dx[i], dx_ref[i], rtol=1e-5, atol=1e-5, err_msg=f"{op}: image {i}'s input gradient")
