"""Losses with handwritten backward rules: ``softmax_cross_entropy`` and ``mse``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn import _checks
from tinyfn.layers.activation import _stable_log_softmax

__all__ = ["softmax_cross_entropy", "mse"]


@jax.custom_vjp
def _softmax_cross_entropy(logits, labels):
    logp = _stable_log_softmax(logits, -1)
    return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean()


def _sce_fwd(logits, labels):
    logp = _stable_log_softmax(logits, -1)
    loss = -jnp.take_along_axis(logp, labels[:, None], axis=1).mean()
    return loss, (jnp.exp(logp), labels)


def _sce_bwd(res, g):
    probs, labels = res
    onehot = jax.nn.one_hot(labels, probs.shape[1], dtype=probs.dtype)
    # d/dlogits of mean_n(-log softmax(logits_n)[y_n]) = (softmax - onehot) / N
    return g * (probs - onehot) / probs.shape[0], None


_softmax_cross_entropy.defvjp(_sce_fwd, _sce_bwd)


def softmax_cross_entropy(logits, labels):
    """Mean over the batch of ``-log softmax(logits)[label]``, log-sum-exp stable.

    Args:
      logits: ``(N, K)`` floats.
      labels: ``(N,)`` integer class indices in ``[0, K)``.

    Returns:
      A scalar. Backward (handwritten): ``(softmax(logits) - onehot(labels)) / N``.
    """
    logits = _checks.float_array("logits", logits, ndim=2, layout="(N, num_classes)")
    if not hasattr(labels, "dtype"):
        labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"softmax_cross_entropy: labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"softmax_cross_entropy: labels has shape {tuple(labels.shape)}, expected ({logits.shape[0]},) "
            f"to match logits {tuple(logits.shape)}"
        )
    if not isinstance(labels, jax.core.Tracer):
        bad = np.flatnonzero((np.asarray(labels) < 0) | (np.asarray(labels) >= logits.shape[1]))
        if bad.size:
            raise ValueError(
                f"softmax_cross_entropy: labels[{bad[0]}] = {int(np.asarray(labels)[bad[0]])} is outside "
                f"[0, {logits.shape[1]}) for logits of shape {tuple(logits.shape)}"
            )
    return _softmax_cross_entropy(logits, labels.astype(jnp.int32))


@jax.custom_vjp
def _mse(pred, target):
    return jnp.mean(jnp.square(pred - target))


def _mse_fwd(pred, target):
    diff = pred - target
    return jnp.mean(jnp.square(diff)), diff


def _mse_bwd(diff, g):
    d = g * 2.0 * diff / diff.size  # d/dpred mean((pred - target)²) = 2 (pred - target) / size
    return d, -d


_mse.defvjp(_mse_fwd, _mse_bwd)


def mse(pred, target):
    """Mean squared error over all elements, ``mean((pred - target)²)``.

    Backward (handwritten): ``2 (pred - target) / size`` for ``pred`` and its negative for ``target``.
    """
    pred = _checks.float_array("pred", pred)
    target = _checks.float_array("target", target)
    _checks.same_dtype("mse", pred=pred, target=target)
    if pred.shape != target.shape:
        raise ValueError(f"mse: pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}; expected equal shapes")
    return _mse(pred, target)
