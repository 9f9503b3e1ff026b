"""``evaluate``: a model's mean loss, accuracy and predictions on a data set, in batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn.layers import has_state
from tinyfn.losses import softmax_cross_entropy
from tinyfn.train.step import make_eval_step

__all__ = ["evaluate", "EvalResult"]


class EvalResult(tuple):
    """What ``evaluate`` returns: unpacks as ``(loss, accuracy, predictions)``; with test-time views,
    ``view_loss`` and ``view_accuracy`` hold each view's own mean loss and accuracy (lists, one per view, in the order
    of ``views``; ``None`` without views)::

        loss, acc, preds = evaluate(...)
        result = evaluate(..., views=FLIP_VIEWS); result.view_accuracy[0]  # the single-view accuracy
    """

    def __new__(cls, loss, accuracy, predictions, view_loss=None, view_accuracy=None):
        result = super().__new__(cls, (loss, accuracy, predictions))
        result.view_loss, result.view_accuracy = view_loss, view_accuracy
        return result

    loss = property(lambda self: self[0])
    accuracy = property(lambda self: self[1])
    predictions = property(lambda self: self[2])


def _check_finite(m, batch, start, size, n):
    """A batch whose loss is NaN or infinite has no meaningful accuracy: its outputs (logits) are not finite."""
    losses = [float(m["loss"]), *np.asarray(m.get("view_loss", []), np.float64).tolist()]
    if not all(np.isfinite(losses)):
        raise ValueError(
            f"evaluate: the model's outputs are not finite on batch {batch} (examples {start} to "
            f"{start + size - 1} of {n}): loss {float(m['loss'])}; the params (or the input) hold NaN or infinity, "
            "and any accuracy computed from such logits would be meaningless"
        )


def evaluate(
    model,
    params,
    data,
    *,
    batch_size: int = 1000,
    loss_fn=softmax_cross_entropy,
    eval_step=None,
    model_state=None,
    views=None,
) -> EvalResult:
    """Mean loss, accuracy and the predictions of ``model`` on ``data = (x, y)``, in batches.

    The model runs in evaluation mode. A stateful model (batch norm) needs its ``model_state``
    (``fit(...).model_state`` or ``load_model(...).model_state``); ``eval_step`` is a ``make_eval_step(model, loss_fn,
    with_state=True)``. ``views`` averages the class probabilities over deterministic views of each batch (test-time
    augmentation, e.g. ``augment.FLIP_VIEWS``; see ``make_eval_step``); the result's ``view_loss`` and
    ``view_accuracy`` then hold each view's own metrics, computed from the same forward passes. A batch whose loss is
    not finite (NaN or infinite logits, e.g. from NaN params) raises ``ValueError`` naming the batch.
    """
    if eval_step is not None and views is not None:
        raise ValueError(
            "evaluate: pass views= or eval_step=, not both (build the step with make_eval_step(..., views=views))"
        )
    x, y = data
    n = len(y)
    if model_state is None:
        if has_state(model):
            raise ValueError(
                f"evaluate: the model carries state ({model.name}: running statistics); "
                "pass model_state= (from fit(...).model_state or load_model(...).model_state)"
            )
        model_state = {}
    eval_step = eval_step or make_eval_step(model, loss_fn, with_state=True, views=views)
    loss = correct = 0.0
    view_loss = view_correct = None
    preds = []

    def dispatched(start):  # queued on the device; read back one batch later, so the device never waits on the host
        xb, yb = jnp.asarray(x[start : start + batch_size]), jnp.asarray(y[start : start + batch_size])
        return min(batch_size, n - start), eval_step(params, model_state, xb, yb)

    pending = dispatched(0) if n else None
    for start in range(0, n, batch_size):
        size, m = pending
        pending = dispatched(start + batch_size) if start + batch_size < n else None
        m = jax.device_get(m)
        _check_finite(m, start // batch_size, start, size, n)
        loss += float(m["loss"]) * size
        correct += float(m["accuracy"]) * size
        if "view_loss" in m:
            view_loss = (0.0 if view_loss is None else view_loss) + np.asarray(m["view_loss"], np.float64) * size
            view_correct = (0.0 if view_correct is None else view_correct) + np.asarray(
                m["view_accuracy"], np.float64
            ) * size
        preds.append(np.asarray(m["predictions"]))
    per_view = (
        (None, None) if view_loss is None else ([float(v) / n for v in view_loss], [float(v) / n for v in view_correct])
    )
    return EvalResult(loss / n, correct / n, np.concatenate(preds), *per_view)
