"""dot_product_attention: both formulations' handwritten rules equal autodiff of the reference, finite
differences, forward-over-reverse and PyTorch's scaled_dot_product_attention (no mask, boolean, additive, causal);
the blocked form equals the plain one when the lengths are not multiples of the block; a fully masked row
gives zeros and zero gradients, as PyTorch 2.13 does, never NaN."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import gradcheck, reference as R
from tinyfn.layers import ATTENTION_FORMULATIONS, dot_product_attention

MASKS = ("none", "boolean", "additive", "causal")

# ---- for the op registry: a sampler of valid random arguments and a PyTorch oracle ----


def sample(rng, dtype=np.float64, *, mask="none", shape=(1, 2, 3, 5, 2, 3)):
    """``(args, kwargs)``: ``q (N, H, T, D)``, ``k (N, H, S, D)``, ``v (N, H, S, Dv)`` and one kind of mask.

    The boolean mask ``(T, S)`` leaves every row at least one key; the additive one is ``(1, H, 1, S)`` floats.
    """
    n, h, t, s, d, dv = shape
    q, k, v = (rng.standard_normal(sh).astype(dtype) for sh in ((n, h, t, d), (n, h, s, d), (n, h, s, dv)))
    if mask == "boolean":
        keep = rng.random((t, s)) < 0.6
        keep[np.arange(t), rng.integers(0, s, t)] = True
        return (q, k, v), {"mask": keep}
    if mask == "additive":
        return (q, k, v), {"mask": rng.standard_normal((1, h, 1, s)).astype(dtype)}
    return (q, k, v), ({"causal": True} if mask == "causal" else {})


def torch_oracle(q, k, v, *, mask=None, causal=False, scale=None):
    """``F.scaled_dot_product_attention`` on torch tensors (``is_causal`` for ``causal``)."""
    import torch

    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)


def _ours(formulation, block_size=2, **kw):
    """The op with its options bound, jitted: one compilation per test instead of one per primitive."""
    return jax.jit(partial(dot_product_attention, formulation=formulation, block_size=block_size, **kw))


def _as_torch(kw):
    import torch

    return {k: torch.tensor(np.asarray(v)) if hasattr(v, "shape") else v for k, v in kw.items()}


# ---- tests ----


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("formulation", ATTENTION_FORMULATIONS)
def test_rule_matches_autodiff_of_the_reference_and_finite_differences(rng, formulation, mask):
    with jax.enable_x64(True):
        args, kw = sample(rng, mask=mask)
        np.testing.assert_allclose(_ours(formulation, **kw)(*args), R.dot_product_attention(*args, **kw), rtol=1e-12)
        gradcheck.check_vjp(_ours(formulation, **kw), args, reference=jax.jit(partial(R.dot_product_attention, **kw)))


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("formulation", ATTENTION_FORMULATIONS)
def test_output_and_gradients_equal_pytorch_sdpa(rng, formulation, mask):
    torch = pytest.importorskip("torch")
    with jax.enable_x64(True):
        args, kw = sample(rng, mask=mask, shape=(2, 2, 4, 5, 3, 2))
        g = rng.standard_normal((2, 2, 4, 2))
        y, vjp = jax.vjp(_ours(formulation, **kw), *map(jnp.asarray, args))
        targs = [torch.tensor(a, requires_grad=True) for a in args]
        ty = torch_oracle(*targs, **_as_torch(kw))
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
        for ours, theirs in zip(vjp(jnp.asarray(g)), targs):
            np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("mask", ["boolean", "causal", "per_query"])
def test_blocked_equals_plain_when_the_lengths_are_not_multiples_of_the_block(rng, mask):
    args, kw = sample(rng, np.float32, mask="none" if mask == "per_query" else mask, shape=(2, 1, 7, 11, 3, 4))
    if mask == "per_query":  # (N, 1, T, 1): the same for every key block; queries 2 and 5 of entry 1 see no key
        keep = np.ones((2, 1, 7, 1), bool)
        keep[1, 0, [2, 5]] = False
        kw = {"mask": keep}
    g = jnp.asarray(rng.standard_normal((2, 1, 7, 4)), jnp.float32)
    y_plain, vjp_plain = jax.vjp(_ours("plain", **kw), *map(jnp.asarray, args))
    y_blocked, vjp_blocked = jax.vjp(_ours("blocked", block_size=4, **kw), *map(jnp.asarray, args))
    np.testing.assert_allclose(y_blocked, y_plain, rtol=1e-5, atol=1e-6)
    for blocked, plain in zip(vjp_blocked(g), vjp_plain(g)):
        np.testing.assert_allclose(blocked, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("formulation", ATTENTION_FORMULATIONS)
def test_hessian_through_the_rule_equals_the_references(rng, formulation):
    with jax.enable_x64(True):
        (q, k, v), kw = sample(rng, mask="causal", shape=(1, 1, 3, 4, 2, 2))
        c = jnp.asarray(rng.standard_normal((1, 1, 3, 2)))
        ours = jax.jit(jax.hessian(lambda q: jnp.sum(c * _ours(formulation, **kw)(q, q[:, :, :1] + k, v))))(q)
        theirs = jax.jit(jax.hessian(lambda q: jnp.sum(c * R.dot_product_attention(q, q[:, :, :1] + k, v, **kw))))(q)
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["boolean", "additive"])
@pytest.mark.parametrize("formulation", ATTENTION_FORMULATIONS)
def test_a_fully_masked_row_gives_zeros_and_zero_gradients_like_pytorch(rng, formulation, kind):
    torch = pytest.importorskip("torch")
    with jax.enable_x64(True):
        (q, k, v), _ = sample(rng, shape=(1, 1, 3, 5, 2, 3))
        keep = np.ones((3, 5), bool)
        keep[1] = False  # query 1 may see no key
        mask = keep if kind == "boolean" else np.where(keep, 0.0, -np.inf)
        y, vjp = jax.vjp(_ours(formulation, mask=mask), *map(jnp.asarray, (q, k, v)))
        dq, dk, dv = vjp(jnp.ones_like(y))
        targs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
        ty = torch_oracle(*targs, mask=torch.tensor(mask))
        ty.sum().backward()
        np.testing.assert_array_equal(np.asarray(y)[0, 0, 1], 0.0)
        np.testing.assert_array_equal(ty.detach().numpy()[0, 0, 1], 0.0)  # what PyTorch 2.13 returns on CPU
        np.testing.assert_array_equal(np.asarray(dq)[0, 0, 1], 0.0)
        for ours, theirs in zip((y, dq, dk, dv), (ty, *targs)):
            t = theirs.detach().numpy() if ours is y else theirs.grad.numpy()
            assert np.isfinite(np.asarray(ours)).all()
            np.testing.assert_allclose(ours, t, rtol=1e-12, atol=1e-14)


def test_equal_keys_give_the_mean_of_the_values_and_the_default_scale_is_one_over_root_d(rng):
    q = jnp.asarray(rng.standard_normal((1, 1, 2, 4)), jnp.float32)
    k = jnp.ones((1, 1, 3, 4))
    v = jnp.arange(6.0).reshape(1, 1, 3, 2)
    mean_of_values = jnp.broadcast_to(v.mean(axis=2, keepdims=True), (1, 1, 2, 2))
    np.testing.assert_allclose(dot_product_attention(q, k, v), mean_of_values)
    k = jnp.asarray(rng.standard_normal((1, 1, 3, 4)), jnp.float32)
    np.testing.assert_allclose(dot_product_attention(q, k, v), dot_product_attention(q, k, v, scale=0.5), rtol=1e-6)


@pytest.mark.parametrize("formulation", ATTENTION_FORMULATIONS)
def test_jit_and_vmap_equal_the_eager_gradient(rng, formulation):
    args, kw = sample(rng, np.float32, mask="boolean", shape=(2, 1, 3, 5, 2, 2))
    op = partial(dot_product_attention, formulation=formulation, block_size=2, **kw)  # not jitted: eager
    grad = jax.grad(lambda q, k, v: jnp.sum(op(q, k, v) ** 2), argnums=(0, 1, 2))
    eager = grad(*args)
    for a, b in zip(jax.jit(grad)(*args), eager):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    batched = jax.jit(jax.vmap(grad))(*(a[:, None] for a in args))  # one (1, H, T, D) problem per batch entry
    for a, b in zip(batched, eager):
        np.testing.assert_allclose(a[:, 0], b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(k=jnp.zeros((1, 2, 5, 3))), ValueError, r"^dot_product_attention: k has shape \(1, 2, 5, 3\), expected"),
        (dict(v=jnp.zeros((1, 2, 4, 3))), ValueError, r"^dot_product_attention: v has shape \(1, 2, 4, 3\), expected"),
        (dict(q=jnp.zeros((2, 3, 4))), ValueError, r"^dot_product_attention: q must have rank 4 \(N, H, T, D\)"),
        (
            dict(mask=jnp.ones((3, 5), bool)),
            ValueError,
            r"^dot_product_attention: mask has shape \(3, 5\), expected a shape broadcastable to "
            r"\(N, H, T, S\) = \(1, 2, 3, 6\)",
        ),
        (
            dict(mask=jnp.ones((3, 6), jnp.int32)),
            TypeError,
            r"^dot_product_attention: mask must be boolean .*got dtype int32",
        ),
        (
            dict(formulation="flash"),
            ValueError,
            r"^dot_product_attention: formulation must be one of \('plain', 'blocked'\)",
        ),
        (dict(block_size=0), ValueError, r"^dot_product_attention: block_size must be a positive int, got 0"),
        (dict(scale=float("inf")), ValueError, r"^dot_product_attention: scale must be a finite float or None"),
        (dict(causal=1), TypeError, r"^dot_product_attention: causal must be True or False, got 1"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    args = {"q": jnp.zeros((1, 2, 3, 4)), "k": jnp.zeros((1, 2, 6, 4)), "v": jnp.zeros((1, 2, 6, 3))}
    args.update({name: kwargs.pop(name) for name in ("q", "k", "v") if name in kwargs})
    with pytest.raises(error, match=match):
        dot_product_attention(args["q"], args["k"], args["v"], **kwargs)


@pytest.mark.parametrize("formulation", ATTENTION_FORMULATIONS)
def test_each_formulation_runs_through_its_handwritten_rule(rng, formulation):
    args, kw = sample(rng, np.float32, mask="boolean")
    op = partial(dot_product_attention, formulation=formulation, **kw)
    assert "custom_vjp_call" in {e.primitive.name for e in jax.make_jaxpr(op)(*args).eqns}
