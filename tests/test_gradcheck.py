"""The public gradient checker: it must accept right rules and catch wrong ones."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import gradcheck


def test_numerical_grad_is_second_order_accurate():
    x = np.array([0.3, -1.2, 2.0])
    f = lambda x: jnp.sum(jnp.sin(x) * x**2)  # noqa: E731
    exact = np.cos(x) * x**2 + 2 * x * np.sin(x)
    np.testing.assert_allclose(gradcheck.numerical_grad(f, x, 1e-6), exact, rtol=1e-8)
    err_big = np.abs(gradcheck.numerical_grad(f, x, 1e-2) - exact).max()
    err_small = np.abs(gradcheck.numerical_grad(f, x, 1e-3) - exact).max()
    assert 50 < err_big / err_small < 200  # central differences: error ~ eps², a tenth of eps -> a hundredth


def test_numerical_grad_runs_in_float64_even_for_float32_input():
    x = jnp.array([1.0, 2.0], jnp.float32)
    g = gradcheck.numerical_grad(lambda v: jnp.sum(v**3), x, 1e-6)
    np.testing.assert_allclose(g, 3 * np.array([1.0, 4.0]), rtol=1e-8)


@jax.custom_vjp
def _cube(x):
    return x**3


_cube.defvjp(lambda x: (x**3, x), lambda x, g: (g * 3 * x**2,))


@jax.custom_vjp
def _wrong_cube(x):
    return x**3


_wrong_cube.defvjp(lambda x: (x**3, x), lambda x, g: (g * 3 * x**2 * 1.001,))  # a 0.1% error


@jax.custom_vjp
def _scale_bug(x, w):
    return x * w


_scale_bug.defvjp(lambda x, w: (x * w, (x, w)), lambda r, g: (g * r[1], g * r[0] * 2))  # dw is twice too large


def test_check_vjp_accepts_a_correct_rule_and_reports_errors():
    x = jnp.linspace(0.5, 2.0, 7)
    report = gradcheck.check_vjp(_cube, (x,), reference=lambda x: x**3)
    assert report.passed
    assert report.args[0].ref_rel < 1e-6 and report.args[0].fd_rel < 1e-7 and report.args[0].fd_checked == 7
    assert "args[0]" in str(report)


def test_check_vjp_catches_a_small_error_against_the_reference_and_finite_differences():
    x = jnp.linspace(0.5, 2.0, 7)
    with pytest.raises(AssertionError, match=r"gradient of args\[0\]") as err:
        gradcheck.check_vjp(_wrong_cube, (x,), reference=lambda x: x**3)
    assert "vs autodiff" in str(err.value) and "vs finite differences" in str(err.value)
    report = gradcheck.check_vjp(_wrong_cube, (x,), raise_on_failure=False)  # no reference: finite differences alone
    assert not report.passed and 5e-4 < report.args[0].fd_rel < 2e-3


def test_check_vjp_names_the_argument_whose_gradient_is_wrong():
    x, w = jnp.ones(3), jnp.full(3, 2.0)
    with pytest.raises(AssertionError, match=r"gradient of w \(3,\)"):
        gradcheck.check_vjp(_scale_bug, (x, w), argnames=("x", "w"))
    report = gradcheck.check_vjp(_scale_bug, (x, w), argnames=("x", "w"), raise_on_failure=False)
    assert [a.passed for a in report.args] == [True, False]


def test_check_vjp_subsamples_large_arguments():
    x = jnp.linspace(-1, 1, 5000)
    report = gradcheck.check_vjp(_cube, (x,), max_elements=100)
    assert report.passed and report.args[0].fd_checked == 100


def test_check_vjp_rejects_integer_argnums():
    with pytest.raises(ValueError, match="argnums entry 1"):
        gradcheck.check_vjp(lambda x, i: x * i, (jnp.ones(2), jnp.ones(2, jnp.int32)), argnums=(1,))


@pytest.mark.slow
def test_cli_gradcheck_prints_an_all_pass_table():
    out = subprocess.run(
        [sys.executable, "-m", "tinyfn", "gradcheck", "--repeats", "1"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.endswith(("pass", "FAIL"))]
    ops = {line.split()[0] for line in lines}
    assert {"linear", "conv2d", "deconv2d", "max_pool2d", "max_unpool2d", "relu", "softmax_cross_entropy", "mse"} <= ops
    assert all(line.endswith("pass") for line in lines) and "passed" in out.stdout


def test_cli_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "tinyfn", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "gradcheck" in out.stdout


def test_check_vjp_takes_pytrees_such_as_a_layers_params():
    from tinyfn.layers import Conv2D, Flatten, Linear, ReLU, serial

    model = serial(Conv2D(2, 3), ReLU(), Flatten(), Linear(3))
    _, params = model.init(jax.random.key(0), (None, 1, 5, 5))
    x = jax.random.normal(jax.random.key(1), (2, 1, 5, 5))
    report = gradcheck.check_vjp(lambda p, x: model.apply(p, x), (params, x), argnames=("params", "x"), max_elements=50)
    assert report.passed
    assert [a.name for a in report.args] == [
        "params[0]['b']",
        "params[0]['w']",
        "params[3]['b']",
        "params[3]['w']",
        "x",
    ]
    only_params = gradcheck.check_vjp(
        lambda p, x: model.apply(p, x), (params, x), argnums=(0,), finite_differences=False
    )
    assert len(only_params.args) == 4


_SCALE = jnp.array([1.0, -2.0, 1e-7, 3.0, -2e-7, 1.5])  # two entries 10^7 smaller than the largest


@jax.custom_vjp
def _small_entries_bug(x):
    return x * _SCALE


# the rule is 100% wrong (doubled) on the entries 10^7 smaller than the largest, right elsewhere
_small_entries_bug.defvjp(
    lambda x: (x * _SCALE, None), lambda _, g: (g * _SCALE * jnp.where(jnp.abs(_SCALE) < 1e-3, 2.0, 1.0),)
)


def test_check_vjp_catches_a_rule_wrong_only_on_entries_1e7_smaller_than_the_largest():
    x = jnp.linspace(0.5, 1.5, 6)
    with pytest.raises(
        AssertionError,
        match=r"gradient of args\[0\] \(6,\) is wrong: .*vs finite differences: .*worst entry \((2|4),\)",
    ):
        gradcheck.check_vjp(_small_entries_bug, (x,), reference=lambda x: x * _SCALE)
    report = gradcheck.check_vjp(_small_entries_bug, (x,), reference=lambda x: x * _SCALE, raise_on_failure=False)
    assert report.args[0].fd_rel < 1e-6  # normwise it would pass: the error is 10^-7 of the largest entry
    assert report.args[0].fd_worst in {(2,), (4,)}


@jax.custom_vjp
def _forward_off_by_one(x):
    return x**3 + 1.0


_forward_off_by_one.defvjp(
    lambda x: (x**3 + 1.0, x), lambda x, g: (g * 3 * x**2,)
)  # a right gradient of a wrong forward


def test_check_vjp_catches_a_forward_value_off_by_one():
    x = jnp.linspace(0.5, 2.0, 7)
    with pytest.raises(AssertionError, match=r"forward value differs from the reference: max abs error 1\.000e\+00"):
        gradcheck.check_vjp(_forward_off_by_one, (x,), reference=lambda x: x**3)
    report = gradcheck.check_vjp(_forward_off_by_one, (x,), reference=lambda x: x**3, raise_on_failure=False)
    assert report.forward_ok is False and all(a.passed for a in report.args) and "forward" in str(report)


def test_element_wise_criterion_accepts_the_rounding_of_a_right_rule_on_large_float32_cases():
    from functools import partial

    from tinyfn import reference as R
    from tinyfn.layers import conv2d

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 6, 12, 12)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((5, 6, 3, 3)), jnp.float32)
    report = gradcheck.check_vjp(
        partial(conv2d, padding=1), (x, w), reference=partial(R.conv2d, padding=1), max_elements=64
    )
    assert report.passed and report.forward_ok
