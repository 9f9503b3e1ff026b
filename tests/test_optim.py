"""SGD against closed forms and PyTorch; schedules; the jitted step against an unjitted one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import losses
from tinyfn.layers import Conv2D, Flatten, Linear, ReLU, serial
from tinyfn.train import constant, cosine, make_train_step, sgd, step_decay


def _run(opt, p0, a, steps):
    """Minimise 0.5 a p² (gradient a p) for ``steps`` steps."""
    params = {"p": jnp.asarray(p0, jnp.float64)}
    state = opt.init(params)
    for _ in range(steps):
        params, state = opt.update({"p": a * params["p"]}, state, params)
    return np.asarray(params["p"])


@pytest.mark.parametrize("momentum, nesterov, wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, False, 0.1), (0.8, True, 0.05)])
def test_sgd_on_a_quadratic_matches_the_closed_form(momentum, nesterov, wd, x64):
    lr, a, steps, p0 = 0.1, np.array([0.5, 2.0, 3.0]), 25, np.array([1.0, -2.0, 0.5])
    got = _run(sgd(lr, momentum=momentum, nesterov=nesterov, weight_decay=wd), p0, a, steps)
    c = a + wd  # the gradient with weight decay is (a + λ) p
    expected = []
    for ci, pi in zip(c, p0):
        # state (p, v) evolves linearly: v' = μ v + c p;  p' = p - lr (v' or c p + μ v')
        if nesterov:
            m = np.array([[1 - lr * ci * (1 + momentum), -lr * momentum**2], [ci, momentum]])
        else:
            m = np.array([[1 - lr * ci, -lr * momentum], [ci, momentum]])
        expected.append((np.linalg.matrix_power(m, steps) @ np.array([pi, 0.0]))[0])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_sgd_matches_pytorch(x64):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0, grads = rng.standard_normal((3, 4)), [rng.standard_normal((3, 4)) for _ in range(6)]
    tw = torch.tensor(w0, requires_grad=True)
    topt = torch.optim.SGD([tw], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    opt = sgd(0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    params = {"w": jnp.asarray(w0)}
    state = opt.init(params)
    for g in grads:
        tw.grad = torch.tensor(g)
        topt.step()
        params, state = opt.update({"w": jnp.asarray(g)}, state, params)
    np.testing.assert_allclose(params["w"], tw.detach().numpy(), rtol=1e-12)


def test_schedules():
    np.testing.assert_allclose([float(constant(0.3)(s)) for s in (0, 100)], [0.3, 0.3], rtol=1e-6)
    np.testing.assert_allclose([float(step_decay(1.0, 10, 0.5)(s)) for s in (0, 9, 10, 25)], [1.0, 1.0, 0.5, 0.25])
    sched = cosine(1.0, 100, final_learning_rate=0.1, warmup_steps=10)
    np.testing.assert_allclose([float(sched(s)) for s in (0, 9, 10, 55, 100, 150)], [0.1, 1.0, 1.0, 0.55, 0.1, 0.1], rtol=1e-5)
    opt = sgd(step_decay(1.0, 1, 0.5))  # lr 1, 0.5, 0.25 on steps 0, 1, 2
    params, state = {"p": jnp.zeros(())}, None
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.update({"p": jnp.ones(())}, state, params)
    assert float(params["p"]) == -1.75 and int(state["step"]) == 3


def test_mismatched_trees_and_bad_hyperparameters_raise():
    opt = sgd(0.1, momentum=0.9)
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    state = opt.init(params)
    with pytest.raises(ValueError, match="grads and params have different tree structures"):
        opt.update({"w": jnp.zeros((2, 3))}, state, params)
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(3, 2\)"):
        opt.update({"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}, state, params)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0.0, 1.0\), got 1.5"):
        sgd(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="learning_rate"):
        sgd(-0.1)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        sgd(0.1, nesterov=True)


def test_jitted_step_equals_the_unjitted_computation(key):
    model = serial(Conv2D(3, 3), ReLU(), Flatten(), Linear(4))
    _, params = model.init(key, (None, 1, 6, 6))
    x = jax.random.normal(jax.random.key(1), (8, 1, 6, 6))
    y = jnp.arange(8) % 4
    opt = sgd(0.1, momentum=0.9)
    step = make_train_step(model, losses.softmax_cross_entropy, opt, donate=False)
    p_jit, s_jit = params, opt.init(params)
    p_eager, s_eager = params, opt.init(params)
    for _ in range(3):
        p_jit, s_jit, m = step(p_jit, s_jit, x, y, key)
        with jax.disable_jit():
            grads = jax.grad(lambda p: losses.softmax_cross_entropy(model.apply(p, x), y))(p_eager)
            p_eager, s_eager = opt.update(grads, s_eager, p_eager)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p_jit, p_eager)
    assert bool(m["finite"]) and 0.0 <= float(m["accuracy"]) <= 1.0
