"""One jit-compiled training step and one evaluation step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tinyfn.layers import Layer
from tinyfn.train.optim import Optimizer

__all__ = ["make_train_step", "make_eval_step", "accuracy"]


def accuracy(logits, labels):
    """Share of rows whose largest logit is at the label (NaN for non-classification outputs)."""
    if logits.ndim != 2 or not jnp.issubdtype(labels.dtype, jnp.integer):
        return jnp.asarray(jnp.nan, jnp.float32)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)]))


def make_train_step(model: Layer, loss_fn, optimizer: Optimizer, *, donate: bool = True):
    """A jitted ``(params, opt_state, x, y, key) -> (params, opt_state, metrics)``.

    Gradients come from ``jax.grad`` through the layers' handwritten rules;
    ``metrics`` holds ``loss``, ``accuracy`` (on the batch, before the update)
    and ``finite``. A step whose loss or gradients are not finite leaves params
    and optimizer state unchanged (``finite`` false), so the caller can stop with
    the last good values. ``params`` and ``opt_state`` buffers are donated.
    """

    def step(params, opt_state, x, y, key):
        def objective(p):
            logits = model.apply(p, x, key=key, train=True)
            return loss_fn(logits, y), logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        new_params, new_state = optimizer.update(grads, opt_state, params)
        ok = jnp.isfinite(loss) & _all_finite(grads)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        return keep(new_params, params), keep(new_state, opt_state), {"loss": loss, "accuracy": accuracy(logits, y), "finite": ok}

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def make_eval_step(model: Layer, loss_fn):
    """A jitted ``(params, x, y) -> metrics`` with the batch's mean ``loss``, ``accuracy`` and ``predictions``."""

    def step(params, x, y):
        logits = model.apply(params, x, train=False)
        preds = jnp.argmax(logits, axis=-1) if logits.ndim == 2 else logits
        return {"loss": loss_fn(logits, y), "accuracy": accuracy(logits, y), "predictions": preds}

    return jax.jit(step)
