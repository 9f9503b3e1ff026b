"""Every formulation of every conv and pool product equals every other and the independent reference (float64)."""

import subprocess
import sys
import textwrap
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from strategies import conv_configs, deconv_configs, distinct, pool_configs

from tinyfn import reference as R
from tinyfn.layers import (
    FORMULATIONS,
    Conv2D,
    MaxPool2D,
    conv2d,
    deconv2d,
    default_formulation,
    formulation,
    kernels,
    max_pool2d,
    max_pool2d_with_switches,
    max_unpool2d,
)

# Every way a product can be evaluated: the three formulations, and im2col's X* in batch chunks.
VARIANTS = {name: dict(formulation=name) for name in FORMULATIONS} | {
    "im2col-chunked": dict(formulation="im2col", chunk_bytes=64)
}


def _vjp_all(f, args, g):
    """``(f(*args), gᵀ ∂f/∂args)`` from one compiled call (a compilation per variant and shape, not one per op)."""

    def run(args, g):
        y, vjp = jax.vjp(f, *args)
        return y, vjp(g)

    return jax.jit(run)(args, g)


def _assert_all_equal(results, expected, tol=1e-12):
    for name, (y, grads) in results.items():
        np.testing.assert_allclose(y, expected[0], rtol=tol, atol=tol, err_msg=name)
        for i, (a, b) in enumerate(zip(grads, expected[1])):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{name}: gradient {i}")


@given(conv_configs())
def test_conv2d_formulations_equal_each_other_and_the_reference(cfg):
    rng = np.random.default_rng(21)
    with jax.enable_x64(True):
        args = tuple(rng.standard_normal(s) for s in (cfg["x_shape"], cfg["w_shape"], cfg["w_shape"][:1]))
        kw = dict(stride=cfg["stride"], padding=cfg["padding"])
        g = rng.standard_normal(jax.eval_shape(partial(R.conv2d, **kw), *args).shape)
        results = {name: _vjp_all(partial(conv2d, **kw, **v), args, g) for name, v in VARIANTS.items()}
        _assert_all_equal(results, _vjp_all(partial(R.conv2d, **kw), args, g))


@given(deconv_configs())
def test_deconv2d_formulations_equal_each_other_and_the_reference(cfg):
    rng = np.random.default_rng(22)
    with jax.enable_x64(True):
        args = tuple(rng.standard_normal(s) for s in (cfg["x_shape"], cfg["w_shape"], cfg["w_shape"][1:2]))
        kw = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"])
        g = rng.standard_normal(jax.eval_shape(partial(R.deconv2d, **kw), *args).shape)
        results = {name: _vjp_all(partial(deconv2d, **kw, **v), args, g) for name, v in VARIANTS.items()}
        _assert_all_equal(results, _vjp_all(partial(R.deconv2d, **kw), args, g))


def _pool_all(kw, name, x, g):
    """Maxima, switches, the rule's gradient and unpooling along the switches: one compiled call per formulation."""

    def run(x, g):
        y, sw = max_pool2d_with_switches(x, formulation=name, **kw)
        dx = jax.vjp(partial(max_pool2d, formulation=name, **kw), x)[1](g)[0]
        return y, sw, dx, max_unpool2d(g, sw, x.shape)

    return jax.jit(run)(x, g)


def _pool_reference(kw, x, g):
    def run(x, g):
        y, sw = R.max_pool2d_with_switches(x, **kw)
        return y, sw, jax.vjp(lambda x: R.max_pool2d_with_switches(x, **kw)[0], x)[1](g)[0]

    return jax.jit(run)(x, g)


@given(pool_configs())
def test_pool_formulations_give_the_same_maxima_switches_routing_and_unpooling(cfg):
    rng = np.random.default_rng(23)
    kw = dict(window=cfg["window"], stride=cfg["stride"], padding=cfg["padding"])
    with jax.enable_x64(True):
        for x in (
            distinct(rng, cfg["x_shape"], dtype=np.float64),
            distinct(rng, cfg["x_shape"], dtype=np.float64).round(0),
        ):
            # distinct values, then rounded: exact ties, where the first maximum must win
            g = rng.standard_normal(jax.eval_shape(partial(R.max_pool2d, **kw), x).shape)
            y_ref, sw_ref, dx_ref = _pool_reference(kw, x, g)
            for name in FORMULATIONS:
                y, sw, dx, unpooled = _pool_all(kw, name, x, g)
                np.testing.assert_array_equal(y, y_ref, err_msg=name)
                np.testing.assert_array_equal(sw, sw_ref, err_msg=name)
                np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12, err_msg=name)
                # unpooling along the switches is the same routing
                np.testing.assert_allclose(unpooled, dx_ref, rtol=1e-12, atol=1e-12, err_msg=name)


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, jax, jax.numpy as jnp
    from tinyfn.layers import conv2d, deconv2d
    jax.config.update("jax_enable_x64", True)
    form = sys.argv[1]
    rng = np.random.default_rng(0)
    x, w = jnp.asarray(rng.standard_normal((2, 3, 6, 4))), jnp.asarray(rng.standard_normal((3, 3, 2, 4)))
    kw = dict(stride=(2, 3), padding=(1, 2))
    y, vjp = jax.vjp(jax.jit(lambda x, w: conv2d(x, w, formulation=form, **kw)), x, w)
    dx, dw = vjp(y)
    z, vjp = jax.vjp(jax.jit(lambda y, w: deconv2d(y, w, formulation=form, output_padding=(1, 0), **kw)), y, w)
    dy, dw2 = vjp(z)
    np.savez(sys.argv[2], y=y, dx=dx, dw=dw, z=z, dy=dy, dw2=dw2)
    """
)


@pytest.mark.parametrize("name", FORMULATIONS)
def test_no_formulation_aborts_where_xla_conv_autodiff_does(name, tmp_path):
    """x (2,3,6,4), w (3,3,2,4), stride (2,3), padding (1,2): XLA's own conv autodiff aborts the process here
    (jax 0.10.2). Each formulation runs it in a child process, so an abort fails the test, not the run."""
    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, name, str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x, w = jnp.asarray(rng.standard_normal((2, 3, 6, 4))), jnp.asarray(rng.standard_normal((3, 3, 2, 4)))
        kw = dict(stride=(2, 3), padding=(1, 2))
        y, vjp = jax.vjp(partial(R.conv2d, **kw), x, w)
        z, vjp2 = jax.vjp(partial(R.deconv2d, output_padding=(1, 0), **kw), y, w)
        for key, ref in zip(("y", "dx", "dw", "z", "dy", "dw2"), (y, *vjp(y), z, *vjp2(z))):
            np.testing.assert_allclose(got[key], ref, rtol=1e-12, atol=1e-12, err_msg=key)


def test_the_default_formulation_is_chosen_per_backend():
    assert default_formulation("cpu") == "im2col"
    assert default_formulation("gpu") == default_formulation("cuda") == default_formulation("tpu") == "xla"
    assert default_formulation() == default_formulation(jax.default_backend())


def _paths(f, *args):
    with kernels.record_paths() as paths:
        jax.make_jaxpr(f)(*args)
    return {p[2] for p in paths if p[1] in ("W X*", "argmax")}


def test_an_explicit_argument_wins_over_the_context_which_wins_over_the_backend(rng):
    x = jnp.asarray(rng.standard_normal((2, 3, 6, 6)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 3, 3, 3)), jnp.float32)
    backend = default_formulation(jax.default_backend())
    assert _paths(lambda x: conv2d(x, w), x) == {backend}
    with formulation("xla"):
        assert _paths(lambda x: conv2d(x, w), x) == {"xla"}
        assert _paths(lambda x: max_pool2d(x), x) == {"xla"}
        assert _paths(lambda x: conv2d(x, w, formulation="direct"), x) == {"direct"}
        with formulation(None):
            assert _paths(lambda x: conv2d(x, w), x) == {backend}
    assert _paths(lambda x: conv2d(x, w), x) == {backend}
    # a layer's formulation is passed on to its op
    _, params = Conv2D(4, 3, formulation="direct").init(jax.random.key(0), x.shape)
    assert _paths(lambda x: Conv2D(4, 3, formulation="direct").apply(params, x), x) == {"direct"}
    assert _paths(lambda x: MaxPool2D(2, formulation="direct").apply({}, x), x) == {"direct"}


def test_a_one_output_channel_filter_takes_the_direct_form_by_default_on_cpu(rng):
    x = jnp.asarray(rng.standard_normal((2, 3, 6, 6)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((1, 3, 3, 3)), jnp.float32)
    expected = "direct" if jax.default_backend() == "cpu" else "xla"
    assert _paths(lambda x: conv2d(x, w), x) == {expected}
    assert _paths(lambda x: conv2d(x, w, formulation="im2col"), x) == {"im2col"}  # asked for, it is honoured


def test_unknown_formulations_and_chunk_limits_are_refused_with_their_name():
    x, w = jnp.zeros((1, 1, 4, 4)), jnp.zeros((2, 1, 3, 3))
    with pytest.raises(
        ValueError, match=r"conv2d: formulation must be one of \('im2col', 'xla', 'direct'\) or None, got 'gemm'"
    ):
        conv2d(x, w, formulation="gemm")
    with pytest.raises(ValueError, match=r"conv2d: chunk_bytes must be a positive int, got 0"):
        conv2d(x, w, chunk_bytes=0)
    with pytest.raises(ValueError, match=r"Conv2D: formulation must be one of"):
        Conv2D(2, 3, formulation="cudnn")
    with pytest.raises(ValueError, match=r"max_pool2d: formulation must be one of"):
        max_pool2d(x, formulation="loop")
    with pytest.raises(ValueError, match=r"formulation: formulation must be one of"):
        with formulation("fast"):
            pass


# One rounding of the result, relative to its largest magnitude: half a unit in the last place (bfloat16 8 bits, float16
# 11). Sums carried in the dtype itself miss it by 10x or more at C = 256 (the direct forward: 5.2e-2 in bfloat16).
LOW_PRECISION_TOL = {jnp.bfloat16: 2.0**-8, jnp.float16: 2.0**-11}


@pytest.mark.parametrize("dtype", list(LOW_PRECISION_TOL), ids=lambda d: jnp.dtype(d).name)
def test_every_formulation_sums_low_precision_products_in_float32(rng, dtype):
    """bf16/f16 conv forward and both gradients, C = 256 into one channel, within one rounding of a float64
    reference."""
    x, w, g = (jnp.asarray(rng.standard_normal(s), dtype) for s in ((2, 256, 4, 4), (1, 256, 3, 3), (2, 1, 4, 4)))
    with jax.enable_x64(True):
        exact = [jnp.asarray(np.asarray(a, np.float64)) for a in (x, w, g)]
        y_ref, vjp = jax.vjp(partial(R.conv2d_lax, padding=1), *exact[:2])
        expected = [np.asarray(a) for a in (y_ref, *vjp(exact[2]))]
    for name in FORMULATIONS:
        y, grads = _vjp_all(partial(conv2d, padding=1, formulation=name), (x, w), g)
        for what, got, ref in zip(("output", "dx", "dw"), (y, *grads), expected):
            assert got.dtype == dtype, (name, what)
            err = np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max()
            assert err <= LOW_PRECISION_TOL[dtype], f"{name}: {what} off by {err:.2e} of its largest magnitude"
