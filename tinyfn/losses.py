"""Losses with handwritten backward rules: ``softmax_cross_entropy``, ``mse``, ``binary_cross_entropy_with_logits``."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from tinyfn import _checks
from tinyfn._logsumexp import log_softmax as _plain_log_softmax

__all__ = ["softmax_cross_entropy", "mse"]


def _valid(labels, num_classes):
    return (labels >= 0) & (labels < num_classes)


def _plain_sce(logits, labels, smoothing=0.0):
    """The loss and ``log softmax(logits)``; NaN for every example whose label is outside ``[0, K)``."""
    logp = _plain_log_softmax(logits, -1)
    valid = _valid(labels, logits.shape[1])
    picked = jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[:, None], axis=1)[:, 0]
    nll = -picked
    if smoothing:  # -Σ_k q_k log p_k with q = (1 - ε) onehot + ε/K
        nll = (1 - smoothing) * nll - smoothing * jnp.mean(logp, axis=1)
    losses = jnp.where(valid, nll, jnp.full((), jnp.nan, logits.dtype))
    return losses.mean(), logp


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _softmax_cross_entropy(logits, labels, smoothing):
    return _plain_sce(logits, labels, smoothing)[0]


def _sce_fwd(logits, labels, smoothing):  # plain functions inside the rule, so that forward mode can run through it
    loss, logp = _plain_sce(logits, labels, smoothing)
    return loss, (jnp.exp(logp), labels)


def _sce_bwd(smoothing, res, g):
    probs, labels = res
    k = probs.shape[1]
    target = (1 - smoothing) * jax.nn.one_hot(labels, k, dtype=probs.dtype) + smoothing / k
    # d/dlogits of mean_n(-Σ_k q_nk log softmax(logits_n)_k) = (softmax - q) / N, as Σ_k q_nk = 1 (q = onehot
    # without smoothing); NaN rows for invalid labels, as the loss
    grad = jnp.where(_valid(labels, k)[:, None], probs - target, jnp.full((), jnp.nan, probs.dtype))
    return g * grad / probs.shape[0], None


_softmax_cross_entropy.defvjp(_sce_fwd, _sce_bwd)


def softmax_cross_entropy(logits, labels, *, label_smoothing: float = 0.0, check_labels: bool = False):
    """Mean over the batch of ``-log softmax(logits)[label]``, log-sum-exp stable.

    Args:
      logits: ``(N, K)`` floats, ``N >= 1``.
      labels: ``(N,)`` integer class indices in ``[0, K)``.
      label_smoothing: ``ε`` in ``[0, 1)``: the target is ``(1 - ε) onehot(label) + ε/K``
        and the loss ``-Σ_k q_k log softmax(logits)_k`` (``torch.nn.functional.cross_entropy``'s
        ``label_smoothing``); 0 is the plain loss.
      check_labels: also state the label range as a ``jax.experimental.checkify``
        check, so that ``checkify.checkify(f)`` of a jitted ``f`` reports the first
        label out of range (the caller must then checkify ``f``; without checkify,
        a jitted ``f`` refuses to trace with it).

    Returns:
      A scalar. Backward (handwritten): ``(softmax(logits) - q) / N``, ``q = onehot(labels)`` without smoothing.

    Labels out of range are refused eagerly (with their position and value). Under ``jit`` their values are unknown at
    trace time: then the loss *and* its gradient are NaN (the gradient's rows of those examples, hence every parameter
    gradient that depends on them), never a plausible number, so a finite check (``fit``'s guard) stops at that step.
    """
    op = "softmax_cross_entropy"
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, (int, float))
        or not 0 <= label_smoothing < 1
    ):
        raise ValueError(f"{op}: label_smoothing must be a float in [0, 1), got {label_smoothing!r}")
    logits = _checks.float_array("logits", logits, ndim=2, layout="(N, num_classes)", op=op)
    if logits.shape[0] == 0:
        raise ValueError(
            f"{op}: the batch is empty (logits has shape {tuple(logits.shape)}); the mean over no examples is undefined"
        )
    if not hasattr(labels, "dtype"):
        labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{op}: labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"{op}: labels has shape {tuple(labels.shape)}, expected ({logits.shape[0]},) to match logits "
            f"{tuple(logits.shape)}"
        )
    if not isinstance(labels, jax.core.Tracer):
        bad = np.flatnonzero((np.asarray(labels) < 0) | (np.asarray(labels) >= logits.shape[1]))
        if bad.size:
            raise ValueError(
                f"{op}: labels[{bad[0]}] = {int(np.asarray(labels)[bad[0]])} is outside "
                f"[0, {logits.shape[1]}) for logits of shape {tuple(logits.shape)}"
            )
    elif check_labels:
        valid = _valid(labels, logits.shape[1])
        first = jnp.argmin(valid)
        checkify.check(
            valid.all(),
            f"{op}: labels[{{i}}] = {{v}} is outside [0, {logits.shape[1]}) for logits of shape {tuple(logits.shape)}",
            i=first,
            v=labels[first],
        )
    return _softmax_cross_entropy(logits, labels.astype(jnp.int32), float(label_smoothing))


def _plain_mse(pred, target):
    return jnp.mean(jnp.square(pred - target))


@jax.custom_vjp
def _mse(pred, target):
    return _plain_mse(pred, target)


def _mse_fwd(pred, target):
    diff = pred - target
    return jnp.mean(jnp.square(diff)), diff


def _mse_bwd(diff, g):
    d = g * 2.0 * diff / diff.size  # d/dpred mean((pred - target)²) = 2 (pred - target) / size
    return d, -d


_mse.defvjp(_mse_fwd, _mse_bwd)


def mse(pred, target):
    """Mean squared error over all elements, ``mean((pred - target)²)``; ``pred`` and ``target`` of one non-empty shape.

    Backward (handwritten): ``2 (pred - target) / size`` for ``pred`` and its negative for ``target``.
    """
    pred = _checks.float_array("pred", pred, op="mse")
    target = _checks.float_array("target", target, op="mse")
    _checks.same_dtype("mse", pred=pred, target=target)
    if pred.shape != target.shape:
        raise ValueError(
            f"mse: pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}; expected equal shapes"
        )
    if pred.size == 0:
        raise ValueError(
            f"mse: the batch is empty (pred has shape {tuple(pred.shape)}); the mean over no elements is undefined"
        )
    return _mse(pred, target)


# ---- binary cross-entropy on logits ----

__all__ += ["binary_cross_entropy_with_logits"]


def _softplus(x):
    """``log(1 + e^x)`` without overflow: ``max(x, 0) + log1p(e^{-|x|})``."""
    return jnp.maximum(x, jnp.zeros((), x.dtype)) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _plain_bce(logits, targets, pos_weight):
    # -[w t log σ(z) + (1 - t) log(1 - σ(z))] with -log σ(z) = softplus(-z) and -log(1 - σ(z)) = softplus(z)
    return jnp.mean(pos_weight * targets * _softplus(-logits) + (1 - targets) * _softplus(logits))


@jax.custom_vjp
def _bce(logits, targets, pos_weight):
    return _plain_bce(logits, targets, pos_weight)


def _bce_fwd(logits, targets, pos_weight):  # the plain forward, so that forward mode can run through this rule
    return _plain_bce(logits, targets, pos_weight), (logits, targets, pos_weight)


def _bce_bwd(res, g):
    z, t, w = res
    sig = jnp.exp(-_softplus(-z))  # σ(z), from its stable logarithm
    # d/dz [w t softplus(-z) + (1 - t) softplus(z)] = -w t (1 - σ(z)) + (1 - t) σ(z)  (= σ(z) - t without weight)
    dz = (1 - t) * sig - w * t * (1 - sig)
    dt = w * _softplus(-z) - _softplus(z)  # the loss is linear in t
    return g * dz / z.size, g * dt / z.size, None  # pos_weight is a constant


_bce.defvjp(_bce_fwd, _bce_bwd)


def binary_cross_entropy_with_logits(logits, targets, *, pos_weight=None):
    """Mean over all elements of ``-[w t log σ(z) + (1 - t) log(1 - σ(z))]`` (``F.binary_cross_entropy_with_logits``).

    Args:
      logits: ``z``, floats of any non-empty shape.
      targets: ``t``, floats of ``logits``' shape, usually in ``[0, 1]`` (soft targets allowed).
      pos_weight: ``w``, the positive examples' weight (``None``: 1), broadcastable to
        ``logits``' shape, e.g. ``(C,)`` for ``(N, C)`` logits; a constant (no gradient).

    Returns:
      A scalar, computed through ``log σ(z) = -softplus(-z)`` so that no exponential overflows.

    Backward (handwritten): ``(σ(z) - t) / size`` for ``z`` (``((1 - t) σ(z) - w t (1 - σ(z))) / size`` with
    ``pos_weight``), ``(w softplus(-z) - softplus(z)) / size`` for ``t``.
    """
    op = "binary_cross_entropy_with_logits"
    logits = _checks.float_array("logits", logits, op=op)
    targets = _checks.float_array("targets", targets, op=op)
    _checks.same_dtype(op, logits=logits, targets=targets)
    if logits.shape != targets.shape:
        raise ValueError(
            f"{op}: logits has shape {tuple(logits.shape)} but targets has shape {tuple(targets.shape)}; "
            "expected equal shapes"
        )
    if logits.size == 0:
        raise ValueError(
            f"{op}: the batch is empty (logits has shape {tuple(logits.shape)}); the mean over no elements is undefined"
        )
    if pos_weight is None:
        weight = jnp.ones((), logits.dtype)
    else:
        weight = _checks.float_array("pos_weight", pos_weight, op=op)
        try:
            ok = np.broadcast_shapes(weight.shape, logits.shape) == logits.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{op}: pos_weight has shape {tuple(weight.shape)}, "
                f"expected a shape broadcastable to logits' {tuple(logits.shape)}"
            )
    weight = jax.lax.stop_gradient(jnp.broadcast_to(weight.astype(logits.dtype), logits.shape))
    return _bce(logits, targets, weight)
