"""embedding: a gather forward whose handwritten backward scatter-adds, so repeated ids sum their gradients
(equal to the one-hot reference, finite differences, forward-over-reverse and PyTorch); ids out of range are
refused eagerly and give NaN rows under jit; the Embedding layer checks its params and round-trips as a spec."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import gradcheck, reference as R
from tinyfn.layers import Embedding, embedding, from_spec, to_spec

# ---- for the op registry: a sampler of valid random arguments and a PyTorch oracle ----


def sample(rng, dtype=np.float64):
    """``(args, kwargs)``: ids ``(2, 5)`` in ``[0, 4)`` (so some repeat) and a ``(4, 3)`` table."""
    ids = rng.integers(0, 4, (2, 5)).astype(np.int32)
    return (ids, rng.standard_normal((4, 3)).astype(dtype)), {}


def torch_oracle(ids, table):
    """``F.embedding`` on torch tensors (ids as int64)."""
    import torch

    return torch.nn.functional.embedding(ids.long(), table)


# ---- tests ----


def test_rows_are_gathered_and_repeated_ids_sum_their_gradients():
    table = jnp.arange(8.0).reshape(4, 2)
    ids = jnp.array([[1, 1, 3]])
    np.testing.assert_array_equal(embedding(ids, table), [[[2.0, 3.0], [2.0, 3.0], [6.0, 7.0]]])
    g = jnp.array([[[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]]])
    dtable = jax.vjp(lambda t: embedding(ids, t), table)[1](g)[0]
    np.testing.assert_array_equal(dtable, [[0.0, 0.0], [3.0, 30.0], [0.0, 0.0], [4.0, 40.0]])


def test_rule_matches_autodiff_of_the_one_hot_reference_and_finite_differences(rng):
    with jax.enable_x64(True):
        (ids, table), _ = sample(rng)
        np.testing.assert_array_equal(embedding(ids, table), R.embedding(ids, table))
        gradcheck.check_vjp(lambda t: embedding(ids, t), (table,), reference=lambda t: R.embedding(ids, t))


def test_output_and_table_gradient_with_repeated_ids_equal_pytorch(rng):
    torch = pytest.importorskip("torch")
    with jax.enable_x64(True):
        (ids, table), _ = sample(rng)
        assert len(np.unique(ids)) < ids.size  # repeated ids, by construction
        g = rng.standard_normal((2, 5, 3))
        y, vjp = jax.vjp(lambda t: embedding(ids, t), jnp.asarray(table))
        tt = torch.tensor(table, requires_grad=True)
        ty = torch_oracle(torch.tensor(ids), tt)
        ty.backward(torch.tensor(g))
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_allclose(vjp(jnp.asarray(g))[0], tt.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_hessian_through_the_rule_equals_the_references():
    with jax.enable_x64(True):
        ids, table = jnp.array([0, 2, 2, 1]), jnp.array([[0.5, -1.0], [2.0, 0.3], [-0.7, 1.2]])
        ours = jax.jit(jax.hessian(lambda t: jnp.sum(embedding(ids, t) ** 3)))(table)
        theirs = jax.jit(jax.hessian(lambda t: jnp.sum(R.embedding(ids, t) ** 3)))(table)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_jit_and_vmap_equal_the_eager_gradient(rng):
    (ids, table), _ = sample(rng, np.float32)
    grad = jax.grad(lambda t, i: jnp.sum(embedding(i, t) ** 2))
    eager = grad(table, ids)
    np.testing.assert_allclose(jax.jit(grad)(table, ids), eager, rtol=1e-6)
    per_row = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(table, ids)
    np.testing.assert_allclose(per_row.sum(axis=0), eager, rtol=1e-6)


def test_ids_out_of_range_are_refused_eagerly_with_their_position():
    match = r"^embedding: ids\[1, 0\] = 4 is outside \[0, 4\) for a table of shape \(4, 2\)"
    with pytest.raises(ValueError, match=match):
        embedding(jnp.array([[0, 1], [4, 2]]), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"^embedding: ids\[0\] = -1 is outside \[0, 4\)"):
        embedding(jnp.array([-1]), jnp.zeros((4, 2)))
    with pytest.raises(TypeError, match=r"^embedding: ids must be an integer array, got dtype float32"):
        embedding(jnp.array([1.0]), jnp.zeros((4, 2)))


@pytest.mark.parametrize("bad", [4, -1])
def test_ids_out_of_range_under_jit_give_nan_rows_and_add_nothing_to_the_table_gradient(bad):
    table, ids = jnp.arange(8.0).reshape(4, 2), jnp.array([1, bad, 1])
    y, vjp = jax.vjp(jax.jit(embedding), ids, table)
    assert np.isnan(np.asarray(y[1])).all()
    np.testing.assert_array_equal(np.asarray(y)[[0, 2]], [[2.0, 3.0], [2.0, 3.0]])
    dtable = vjp(jnp.ones((3, 2)))[1]
    np.testing.assert_array_equal(dtable, [[0.0, 0.0], [2.0, 2.0], [0.0, 0.0], [0.0, 0.0]])  # not wrapped to row 3


def test_layer_draws_a_standard_normal_table_checks_params_and_round_trips(key):
    layer = Embedding(300, 4)
    shape, params = layer.init(key, (None, 7))
    assert shape == (None, 7, 4) and params["table"].shape == (300, 4) and params["table"].dtype == jnp.float32
    assert abs(float(params["table"].mean())) < 0.1 and abs(float(params["table"].std()) - 1.0) < 0.1  # 1,200 draws
    ids = jnp.array([[3, 3, 299]])
    np.testing.assert_array_equal(layer.apply(params, ids), params["table"][np.array([[3, 3, 299]])])
    with pytest.raises(ValueError, match=r"Embedding: params\['table'\] has shape \(30, 4\), expected \(300, 4\)"):
        layer.apply({"table": jnp.zeros((30, 4))}, ids)
    rebuilt = from_spec(to_spec(layer))
    assert rebuilt.config == {"num_embeddings": 300, "features": 4}
    with pytest.raises(ValueError, match=r"^Embedding: features must be a positive int, got 0"):
        Embedding(3, 0)


def test_the_op_runs_through_its_handwritten_rule(rng):
    (ids, table), _ = sample(rng, np.float32)
    assert "custom_vjp_call" in {e.primitive.name for e in jax.make_jaxpr(embedding)(ids, table).eqns}
