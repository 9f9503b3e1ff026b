"""A causal transformer cannot see the future, and with that mask it still learns a task that needs the past.

The claim has two halves, each able to fail. (1) Changing the token at position ``j`` leaves the outputs at every
position ``< j`` bit-identical and moves the outputs at ``j`` and after; the same check with ``causal=False`` shows
the earlier outputs *do* move (so it is the mask that holds them, not the check that cannot see). (2) A tiny causal
model trained with ``tinyfn.train`` on a copy task (``a1 a2 a3 a4 D a1 a2 a3 a4``, next-token targets) ends with a
loss on the positions the past determines far below chance, ``ln(vocab)``, and predicts those positions on held-out
sequences; the positions the past cannot determine (the first symbols) stay near chance, as they must.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn import layers as L, train

VOCAB, SYMBOLS, K = 8, 7, 4  # tokens 0..6 are symbols, 7 the delimiter; K symbols copied after it
DELIM = SYMBOLS
T = 2 * K  # inputs s[:-1] and targets s[1:] of s = (a1..aK, D, a1..aK)
DETERMINED = np.arange(T) >= K - 1  # the target at t is determined by s[:t+1]: the delimiter, then the copies


def _model(causal=True, formulation=None, dim=16):
    return L.serial(
        L.Embedding(VOCAB, dim),
        L.PositionEmbedding(),
        L.TransformerBlock(dim, 2, mlp_ratio=2, causal=causal, formulation=formulation),
        L.LayerNorm(),
        L.Linear(VOCAB),
    )


def _outputs_after_changing(model, params, ids, j):
    """The logits for ``ids`` and for ``ids`` with the token at position ``j`` changed, ``(N, T, V)`` each."""
    changed = ids.at[:, j].set((ids[:, j] + 3) % VOCAB)
    apply = jax.jit(model.apply)  # one compilation for both calls
    return apply(params, ids), apply(params, changed)


def _ids(seed, n):
    return jax.random.randint(jax.random.key(seed), (n, T), 0, VOCAB)


@pytest.mark.parametrize("formulation", L.ATTENTION_FORMULATIONS)
def test_a_future_token_does_not_move_earlier_outputs_and_does_move_later_ones(formulation):
    model = _model(causal=True, formulation=formulation)
    _, params = model.init(jax.random.key(0), (None, T))
    ids, j = _ids(1, 3), 5
    before, after = _outputs_after_changing(model, params, ids, j)
    moved = np.abs(np.asarray(after) - np.asarray(before)).max(axis=(0, 2))  # per position
    np.testing.assert_array_equal(after[:, :j], before[:, :j])  # bit-identical: the masked weights are exact zeros
    assert (moved[j:] > 1e-3).all(), f"positions >= {j} should see the changed token, moved by {moved}"


def test_without_the_causal_mask_the_same_check_sees_earlier_outputs_move():
    causal, open_ = _model(causal=True), _model(causal=False)
    _, params = causal.init(jax.random.key(0), (None, T))  # the mask is no parameter: the same params fit both
    ids, j = _ids(1, 3), 5
    before, after = _outputs_after_changing(open_, params, ids, j)
    moved = np.abs(np.asarray(after) - np.asarray(before)).max(axis=(0, 2))
    assert (moved[:j] > 1e-3).all(), f"without the mask every position sees position {j}, moved by {moved}"


def _copy_batch(key, n):
    """``(inputs, targets)`` of ``n`` sequences ``a1..aK D a1..aK``: ``s[:-1]`` and ``s[1:]``, ``(n, T)`` each."""
    symbols = jax.random.randint(key, (n, K), 0, SYMBOLS)
    s = jnp.concatenate([symbols, jnp.full((n, 1), DELIM), symbols], axis=1)
    return s[:, :-1], s[:, 1:]


def _position_losses(logits, targets):
    """``-log p(target)`` per sequence and position, ``(N, T)``."""
    logp = L.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def _determined_loss(logits, targets):
    """The mean cross-entropy over the positions the past determines (the others carry no signal to learn)."""
    return jnp.mean(_position_losses(logits, targets)[:, DETERMINED])


@pytest.mark.slow
def test_a_tiny_causal_transformer_learns_to_copy_far_below_chance():
    model = _model(causal=True)
    _, params = model.init(jax.random.key(0), (None, T))
    optimizer = train.adam(1e-2)
    step = train.make_train_step(model, _determined_loss, optimizer)
    opt_state = optimizer.init(params)
    xs, ys = _copy_batch(jax.random.key(100), 200 * 64)  # 200 steps of 64 sequences, drawn at once
    for i in range(200):
        batch = slice(64 * i, 64 * (i + 1))
        params, opt_state, metrics = step(params, opt_state, xs[batch], ys[batch], jax.random.key(i))
    chance = math.log(VOCAB)
    x, y = _copy_batch(jax.random.key(7), 512)  # held out: a key the training never drew
    logits = jax.jit(model.apply)(params, x)
    losses = np.asarray(_position_losses(logits, y))
    accuracy = np.asarray(jnp.argmax(logits, axis=-1) == y)[:, DETERMINED].mean()
    assert losses[:, DETERMINED].mean() < 0.05 * chance, (losses[:, DETERMINED].mean(), chance)
    assert accuracy > 0.98, accuracy
    # the first symbols are not determined by the past: the model cannot beat ln(7) there, and must not pretend to
    assert losses[:, ~DETERMINED].mean() > 0.8 * math.log(SYMBOLS)
    # and the trained model is causal too: a change at the delimiter's position moves nothing before it
    before, after = _outputs_after_changing(model, params, x[:8], K)
    np.testing.assert_array_equal(after[:, :K], before[:, :K])
