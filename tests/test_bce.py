"""binary_cross_entropy_with_logits: the handwritten rule (σ(z) - t)/N equals the reference, finite differences,
forward-over-reverse and PyTorch, stays exact for huge logits, and names the arguments whose shapes disagree."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import gradcheck, losses, reference as R

bce = losses.binary_cross_entropy_with_logits

# ---- for the op registry: a sampler of valid random arguments and a PyTorch oracle ----


def sample(rng, dtype=np.float64, *, weighted=False):
    """``(args, kwargs)``: logits ``(4, 3)``, soft targets in ``[0, 1]`` and, if ``weighted``, a ``(3,)`` pos_weight."""
    logits = (rng.standard_normal((4, 3)) * 3).astype(dtype)
    targets = rng.uniform(0, 1, (4, 3)).astype(dtype)
    return (logits, targets), ({"pos_weight": rng.uniform(0.5, 3, 3).astype(dtype)} if weighted else {})


def torch_oracle(logits, targets, *, pos_weight=None):
    """``F.binary_cross_entropy_with_logits`` (mean reduction) on torch tensors."""
    import torch

    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


# ---- tests ----


def test_known_value_and_the_rule_sigma_minus_target_over_n():
    z, t = jnp.array([[0.0, 2.0], [-1.0, 3.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
    sig = 1 / (1 + np.exp(-np.asarray(z)))
    expected = -np.mean(np.asarray(t) * np.log(sig) + (1 - np.asarray(t)) * np.log(1 - sig))
    np.testing.assert_allclose(bce(z, t), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(bce)(z, t), (sig - np.asarray(t)) / 4, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("weighted", [False, True])
def test_rule_matches_autodiff_of_the_reference_and_finite_differences_for_logits_and_targets(rng, weighted):
    with jax.enable_x64(True):
        args, kw = sample(rng, weighted=weighted)
        np.testing.assert_allclose(bce(*args, **kw), R.binary_cross_entropy_with_logits(*args, **kw), rtol=1e-12)
        gradcheck.check_vjp(partial(bce, **kw), args, reference=partial(R.binary_cross_entropy_with_logits, **kw))


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradients_equal_pytorch(rng, weighted):
    torch = pytest.importorskip("torch")
    with jax.enable_x64(True):
        (z, t), kw = sample(rng, weighted=weighted)
        loss, (dz, dt) = jax.value_and_grad(partial(bce, **kw), argnums=(0, 1))(jnp.asarray(z), jnp.asarray(t))
        tz, tt = torch.tensor(z, requires_grad=True), torch.tensor(t, requires_grad=True)
        tl = torch_oracle(tz, tt, **{k: torch.tensor(v) for k, v in kw.items()})
        tl.backward()
        np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
        np.testing.assert_allclose(dz, tz.grad.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(dt, tt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_hessian_through_the_rule_equals_the_references():
    with jax.enable_x64(True):
        z = jnp.array([[-2.0, 0.5, 1.5], [3.0, -0.3, 0.0]])
        t, w = jnp.array([[0.0, 1.0, 0.3], [1.0, 0.0, 0.8]]), jnp.array([2.0, 0.5, 1.0])
        ours = jax.jit(jax.hessian(lambda z: bce(z * z, t, pos_weight=w)))(z)
        theirs = jax.jit(jax.hessian(lambda z: R.binary_cross_entropy_with_logits(z * z, t, pos_weight=w)))(z)
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)


def test_huge_logits_give_the_exact_loss_and_finite_gradients():
    z, t = jnp.array([-1000.0, 1000.0, 1000.0, -1000.0]), jnp.array([1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(bce(z, t), (1000.0 + 1000.0 + 0.0 + 0.0) / 4, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(bce)(z, t), [-0.25, 0.25, 0.0, 0.0], atol=1e-7)


def test_jit_and_vmap_equal_the_eager_gradient(rng):
    (z, t), _ = sample(rng, np.float32)
    grad = jax.grad(bce)
    eager = grad(z, t)
    np.testing.assert_allclose(jax.jit(grad)(z, t), eager, rtol=1e-6)
    per_row = jax.jit(jax.vmap(grad))(z, t)  # each row its own mean over 3 elements: 4 times the batch gradient
    np.testing.assert_allclose(per_row, 4 * eager, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(logits=jnp.zeros((2, 3)), targets=jnp.zeros((3, 2))),
            ValueError,
            r"^binary_cross_entropy_with_logits: logits has shape \(2, 3\) but targets has shape \(3, 2\)",
        ),
        (
            dict(logits=jnp.zeros((2, 3)), targets=jnp.zeros((2, 3)), pos_weight=jnp.ones(2)),
            ValueError,
            r"^binary_cross_entropy_with_logits: pos_weight has shape \(2,\), "
            r"expected a shape broadcastable to logits' \(2, 3\)",
        ),
        (
            dict(logits=jnp.zeros((0, 3)), targets=jnp.zeros((0, 3))),
            ValueError,
            r"^binary_cross_entropy_with_logits: the batch is empty",
        ),
        (
            dict(logits=jnp.zeros((2,)), targets=jnp.zeros((2,), jnp.int32)),
            TypeError,
            r"^binary_cross_entropy_with_logits: targets must have a floating dtype, got int32",
        ),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    logits, targets = kwargs.pop("logits"), kwargs.pop("targets")
    with pytest.raises(error, match=match):
        bce(logits, targets, **kwargs)


def test_the_loss_runs_through_its_handwritten_rule(rng):
    args, kw = sample(rng, np.float32, weighted=True)
    assert "custom_vjp_call" in {e.primitive.name for e in jax.make_jaxpr(partial(bce, **kw))(*args).eqns}
