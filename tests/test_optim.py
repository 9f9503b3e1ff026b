"""Optimizers (optax's gradient-transformation protocol) against closed forms, PyTorch and optax; the jitted step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import losses
from tinyfn.layers import Conv2D, Flatten, Linear, ReLU, serial
from tinyfn.train import (
    AdamState,
    SGDState,
    adam,
    adamw,
    apply_updates,
    chain,
    clip_by_global_norm,
    constant,
    cosine,
    make_train_step,
    sgd,
    step_decay,
    weights_only,
)


def _step(opt, grads, state, params):
    updates, state = opt.update(grads, state, params)
    return apply_updates(params, updates), state


def _run(opt, p0, a, steps):
    """Minimise 0.5 a p² (gradient a p) for ``steps`` steps."""
    params = {"p": jnp.asarray(p0, jnp.float64)}
    state = opt.init(params)
    for _ in range(steps):
        params, state = _step(opt, {"p": a * params["p"]}, state, params)
    return np.asarray(params["p"])


@pytest.mark.parametrize(
    "momentum, nesterov, wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, False, 0.1), (0.8, True, 0.05)]
)
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


def _against_torch(make_torch, opt, steps, x64):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0, grads = rng.standard_normal((3, 4)), [rng.standard_normal((3, 4)) for _ in range(steps)]
    tw = torch.tensor(w0, requires_grad=True)
    topt = make_torch(torch, [tw])
    params = {"w": jnp.asarray(w0)}
    state = opt.init(params)
    for g in grads:
        tw.grad = torch.tensor(g)
        topt.step()
        params, state = _step(opt, {"w": jnp.asarray(g)}, state, params)
    return params["w"], tw.detach().numpy(), state


def test_sgd_matches_pytorch(x64):
    got, want, state = _against_torch(
        lambda torch, ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        sgd(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        6,
        x64,
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert isinstance(state, SGDState) and int(state.count) == 6


def test_adam_matches_pytorch_over_20_steps(x64):
    got, want, state = _against_torch(
        lambda torch, ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
        adam(0.01, b1=0.8, b2=0.95, eps=1e-6, weight_decay=0.1),
        20,
        x64,
    )
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert isinstance(state, AdamState) and int(state.count) == 20


def test_adamw_matches_pytorch_over_20_steps(x64):
    got, want, _ = _against_torch(
        lambda torch, ps: torch.optim.AdamW(ps, lr=0.02, weight_decay=0.3),
        adamw(0.02, weight_decay=0.3),
        20,
        x64,
    )
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_adamw_decay_is_decoupled_from_the_second_moment(x64):
    """With a zero gradient Adam's L2 term is rescaled to a ±lr step, AdamW's decay stays lr·λ·p."""
    params = {"p": jnp.asarray([4.0, -0.001])}
    grads = {"p": jnp.zeros(2)}
    w_opt, a_opt = adamw(0.1, weight_decay=0.5), adam(0.1, eps=0.0, weight_decay=0.5)
    w_upd, _ = w_opt.update(grads, w_opt.init(params), params)
    a_upd, _ = a_opt.update(grads, a_opt.init(params), params)
    np.testing.assert_allclose(w_upd["p"], -0.1 * 0.5 * np.array([4.0, -0.001]), rtol=1e-12)
    np.testing.assert_allclose(a_upd["p"], [-0.1, 0.1], rtol=1e-12)  # m̂/√ŝ = sign(λ p) on the first step


def test_adamw_with_a_schedule_matches_pytorch_lambda_lr(x64):
    torch = pytest.importorskip("torch")
    sched = step_decay(0.05, 5, 0.5)
    got, want, _ = _against_torch(
        lambda torch, ps: _with_lambda_lr(
            torch, torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1), lambda s: 0.5 ** (s // 5)
        ),
        adamw(sched, weight_decay=0.1),
        12,
        x64,
    )
    np.testing.assert_allclose(got, want, rtol=1e-10)
    del torch


def _with_lambda_lr(torch, opt, fn):
    sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)

    class Stepper:
        def step(self):
            opt.step()
            sched.step()

    return Stepper()


def test_clip_by_global_norm_scales_the_whole_tree(x64):
    grads = {"a": jnp.asarray([3.0, 0.0]), "b": jnp.asarray([[4.0]])}  # global norm 5
    clip = clip_by_global_norm(1.0)
    clipped, _ = clip.update(grads, clip.init(grads))
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0])
    np.testing.assert_allclose(clipped["b"], [[0.8]])
    kept, _ = clip_by_global_norm(10.0).update(grads, clip.init(grads))
    np.testing.assert_array_equal(kept["b"], grads["b"])


def test_chain_applies_in_order_and_keeps_a_tuple_of_states(x64):
    params = {"p": jnp.asarray([1.0, -1.0])}
    grads = {"p": jnp.asarray([30.0, 40.0])}  # norm 50
    opt = chain(clip_by_global_norm(5.0), sgd(0.1))
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    np.testing.assert_allclose(updates["p"], [-0.3, -0.4])
    assert isinstance(state, tuple) and len(state) == 2 and int(state[1].count) == 1


def test_schedules():
    np.testing.assert_allclose([float(constant(0.3)(s)) for s in (0, 100)], [0.3, 0.3], rtol=1e-6)
    np.testing.assert_allclose([float(step_decay(1.0, 10, 0.5)(s)) for s in (0, 9, 10, 25)], [1.0, 1.0, 0.5, 0.25])
    sched = cosine(1.0, 100, final_learning_rate=0.1, warmup_steps=10)
    np.testing.assert_allclose(
        [float(sched(s)) for s in (0, 9, 10, 55, 100, 150)], [0.1, 1.0, 1.0, 0.55, 0.1, 0.1], rtol=1e-5
    )
    opt = sgd(step_decay(1.0, 1, 0.5))  # lr 1, 0.5, 0.25 on steps 0, 1, 2
    params = {"p": jnp.zeros(())}
    state = opt.init(params)
    for _ in range(3):
        params, state = _step(opt, {"p": jnp.ones(())}, state, params)
    assert float(params["p"]) == -1.75 and int(state.count) == 3


def test_mismatched_trees_and_bad_hyperparameters_raise():
    opt = sgd(0.1, momentum=0.9)
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    state = opt.init(params)
    with pytest.raises(ValueError, match="sgd: grads and params have different tree structures"):
        opt.update({"w": jnp.zeros((2, 3))}, state, params)
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(3, 2\)"):
        opt.update({"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}, state, params)
    with pytest.raises(ValueError, match=r"sgd: momentum must be a number in \[0.0, 1.0\), got 1.5"):
        sgd(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="learning_rate"):
        sgd(-0.1)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"adam: b2 must be a number in \[0.0, 1.0\), got 1.0"):
        adam(0.1, b2=1.0)
    with pytest.raises(ValueError, match="adamw: weight_decay=0.01 needs params"):
        adamw(0.1).update({"w": jnp.zeros(2)}, adamw(0.1).init({"w": jnp.zeros(2)}))
    with pytest.raises(ValueError, match="clip_by_global_norm: max_norm must be > 0"):
        clip_by_global_norm(0.0)


@pytest.mark.parametrize("bad", [lambda p: p, object(), "adam", (lambda p: p, lambda g, s, p: (g, s))])
def test_objects_that_are_not_transformations_are_refused(bad):
    model = serial(Flatten(), Linear(2))
    with pytest.raises(TypeError, match="make_train_step: optimizer must be a gradient transformation"):
        make_train_step(model, losses.softmax_cross_entropy, bad)
    with pytest.raises(TypeError, match=r"chain \(argument 1\): optimizer must be a gradient transformation"):
        chain(sgd(0.1), bad)


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
            p_eager, s_eager = _step(opt, grads, s_eager, p_eager)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p_jit, p_eager)
    assert bool(m["finite"]) and 0.0 <= float(m["accuracy"]) <= 1.0


# ---- optax interoperability (optax is optional: these skip without it) ----


def _small_problem(key):
    model = serial(Flatten(), Linear(3))
    _, params = model.init(key, (None, 1, 2, 2))
    x = jax.random.normal(jax.random.key(1), (6, 1, 2, 2))
    return model, params, x, jnp.arange(6) % 3


def test_optax_adam_inside_make_train_step_equals_tinyfn_adam(key):
    optax = pytest.importorskip("optax")
    model, params, x, y = _small_problem(key)
    results = []
    for opt in (optax.adam(0.01), adam(0.01)):
        step = make_train_step(model, losses.softmax_cross_entropy, opt, donate=False)
        p, s = params, opt.init(params)
        for _ in range(5):
            p, s, _ = step(p, s, x, y, key)
        results.append(p)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7), *results)
    assert not np.allclose(results[0][1]["w"], params[1]["w"])


def test_tinyfn_transformations_inside_an_optax_chain_match_optax_own(x64):
    optax = pytest.importorskip("optax")
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.standard_normal((2, 3))), "b": jnp.asarray(rng.standard_normal(3))}
    ours = optax.chain(clip_by_global_norm(1.0), adamw(0.01, weight_decay=0.1))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.01, weight_decay=0.1))
    results = []
    for opt in (ours, theirs):
        p, s = params, opt.init(params)
        for i in range(10):
            g = jax.tree_util.tree_map(lambda a, i=i: jnp.sin(a * (i + 1)) * 3, p)
            u, s = opt.update(g, s, p)
            p = optax.apply_updates(p, u)
        results.append(p)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), *results)
    sgd_ours, sgd_theirs = sgd(0.1, momentum=0.9, nesterov=True), optax.sgd(0.1, momentum=0.9, nesterov=True)
    g = jax.tree_util.tree_map(jnp.ones_like, params)
    s1, s2 = sgd_ours.init(params), sgd_theirs.init(params)
    for _ in range(3):
        u1, s1 = sgd_ours.update(g, s1, params)
        u2, s2 = sgd_theirs.update(g, s2, params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), u1, u2)


def _two_leaves(rng):
    return {"w": jnp.asarray(rng.standard_normal((2, 3))), "b": jnp.asarray(rng.standard_normal(3))}


def test_adamw_mask_matches_pytorch_param_groups_without_decay_on_the_biases(x64):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    params = _two_leaves(rng)
    tw, tb = (torch.tensor(np.asarray(params[k]), requires_grad=True) for k in ("w", "b"))
    topt = torch.optim.AdamW([{"params": [tw], "weight_decay": 0.3}, {"params": [tb], "weight_decay": 0.0}], lr=0.02)
    ours = []
    for opt in (
        adamw(0.02, weight_decay=0.3, mask=weights_only),
        adamw(0.02, weight_decay=0.3, mask={"w": True, "b": False}),
    ):
        p, s = params, opt.init(params)
        for i in range(20):
            p, s = _step(opt, {k: jnp.sin(p[k] * (i + 1)) for k in p}, s, p)
        ours.append(p)
    for i in range(20):
        for t in (tw, tb):
            t.grad = torch.sin(t.detach() * (i + 1))
        topt.step()
    for results in ours:  # the function mask and the tree mask
        np.testing.assert_allclose(results["w"], tw.detach().numpy(), rtol=1e-10)
        np.testing.assert_allclose(results["b"], tb.detach().numpy(), rtol=1e-10)
    unmasked = adamw(0.02, weight_decay=0.3)
    p, s = params, unmasked.init(params)
    for i in range(20):
        p, s = _step(unmasked, {k: jnp.sin(p[k] * (i + 1)) for k in p}, s, p)
    assert not np.allclose(
        p["b"], results["b"], rtol=1e-6
    )  # the mask changed the biases' path: the test sees a mask that is ignored


def test_adamw_mask_matches_optax(x64):
    optax = pytest.importorskip("optax")
    params = _two_leaves(np.random.default_rng(3))
    results = []
    for opt in (
        adamw(0.01, weight_decay=0.2, mask=weights_only),
        optax.adamw(0.01, weight_decay=0.2, mask=lambda p: {"w": True, "b": False}),
    ):
        p, s = params, opt.init(params)
        for i in range(10):
            u, s = opt.update(jax.tree_util.tree_map(lambda a, i=i: jnp.cos(a * (i + 2)), p), s, p)
            p = apply_updates(p, u)
        results.append(p)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), *results)


def test_sgd_and_adam_masks_decay_exactly_the_chosen_leaves(x64):
    params = _two_leaves(np.random.default_rng(5))
    for make in (
        lambda wd, m: sgd(0.05, momentum=0.9, weight_decay=wd, mask=m),
        lambda wd, m: adam(0.05, weight_decay=wd, mask=m),
    ):
        runs = {}
        for name, (wd, m) in {"masked": (0.5, weights_only), "all": (0.5, None), "none": (0.0, None)}.items():
            opt, p = make(wd, m), params
            s = opt.init(p)
            for i in range(5):
                p, s = _step(opt, jax.tree_util.tree_map(lambda a, i=i: jnp.tanh(a * (i + 1)), p), s, p)
            runs[name] = p
        np.testing.assert_allclose(runs["masked"]["w"], runs["all"]["w"], rtol=1e-12)  # the matrix decays
        np.testing.assert_allclose(runs["masked"]["b"], runs["none"]["b"], rtol=1e-12)  # the vector does not
        assert not np.allclose(runs["all"]["b"], runs["none"]["b"])


def test_bad_masks_are_refused_by_name():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"adamw: mask must have the params' tree structure"):
        adamw(0.1, mask={"w": True}).update(params, adamw(0.1).init(params), params)
    with pytest.raises(TypeError, match=r"sgd: mask\['b'\] must be a Python bool, got str 'no'"):
        sgd(0.1, weight_decay=0.1, mask={"w": True, "b": "no"}).update(params, sgd(0.1).init(params), params)
    with pytest.raises(TypeError, match=r"adam: mask must be a tree of bools"):
        adam(0.1, mask={})


def test_cosine_warmup_is_optax_one_step_ahead_then_equal():
    optax = pytest.importorskip("optax")
    ours = cosine(2.0, 50, final_learning_rate=0.2, warmup_steps=10)
    theirs = optax.warmup_cosine_decay_schedule(0.0, 2.0, 10, 50, end_value=0.2)
    warm = [float(ours(s)) for s in range(10)]
    np.testing.assert_allclose(warm, [float(theirs(s + 1)) for s in range(10)], rtol=1e-6)  # no step at rate 0
    assert warm[0] == pytest.approx(0.2) and float(theirs(0)) == 0.0
    after = range(10, 60)
    np.testing.assert_allclose([float(ours(s)) for s in after], [float(theirs(s)) for s in after], rtol=1e-5)


def test_weights_only_leaves_every_norm_scale_and_shift_undecayed_whatever_its_rank():
    from tinyfn.layers import BatchNorm2D, LayerNorm, init_with_state

    model = serial(Conv2D(3, 3), BatchNorm2D(), Flatten(), LayerNorm(normalized_ndim=1), Linear(4))
    _, params, _ = init_with_state(model, jax.random.key(0), (2, 1, 6, 6))
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(weights_only(params))}
    assert flat == {
        "[0]['w']": True,
        "[0]['b']": False,
        "[1]['gamma']": False,
        "[1]['beta']": False,
        "[3]['gamma']": False,
        "[3]['beta']": False,
        "[4]['w']": True,
        "[4]['b']": False,
    }
    _, ln2 = LayerNorm(normalized_ndim=2).init(jax.random.key(0), (2, 3, 4))
    assert ln2["gamma"].shape == (3, 4) and weights_only(ln2) == {"gamma": False, "beta": False}  # 2-D, still a scale
