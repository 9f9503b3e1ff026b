"""One jit-compiled training step and one evaluation step."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tinyfn.layers import Layer
from tinyfn.train import parallel
from tinyfn.train.optim import Optimizer

__all__ = ["make_train_step", "make_eval_step", "accuracy"]


def accuracy(logits, labels):
    """Share of rows whose largest logit is at the label (NaN for non-classification outputs)."""
    if logits.ndim != 2 or not jnp.issubdtype(labels.dtype, jnp.integer):
        return jnp.asarray(jnp.nan, jnp.float32)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)]))


def make_train_step(model: Layer, loss_fn, optimizer: Optimizer, *, donate: bool = True, mesh=None):
    """A jitted ``(params, opt_state, x, y, key) -> (params, opt_state, metrics)``.

    ``key`` is a ``jax.random`` key or its raw data (``jax.random.key_data``).

    Gradients come from ``jax.grad`` through the layers' handwritten rules;
    ``metrics`` holds ``loss``, ``accuracy`` (on the batch, before the update)
    and ``finite``. A step whose loss or gradients are not finite leaves params
    and optimizer state unchanged (``finite`` false), so the caller can stop with
    the last good values. ``params`` and ``opt_state`` buffers are donated.

    With a ``mesh`` (``tinyfn.train.data_mesh``), the step is data-parallel:
    ``x`` and ``y`` are split along the mesh's ``data`` axis, params, optimizer
    state and metrics are replicated, and XLA inserts the all-reduce of the
    gradients. The batch size must divide by the number of devices.
    """

    def step(params, opt_state, x, y, key):
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # raw key data (uint32), as fit stages it
            key = jax.random.wrap_key_data(key)

        def objective(p):
            logits = model.apply(p, x, key=key, train=True)
            return loss_fn(logits, y), logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        new_params, new_state = optimizer.update(grads, opt_state, params)
        ok = jnp.isfinite(loss) & _all_finite(grads)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        return keep(new_params, params), keep(new_state, opt_state), {"loss": loss, "accuracy": accuracy(logits, y), "finite": ok}

    donate_argnums = (0, 1) if donate else ()
    if mesh is None:
        return jax.jit(step, donate_argnums=donate_argnums)
    rep, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    sharded = jax.jit(step, in_shardings=(rep, rep, data, data, rep), out_shardings=rep, donate_argnums=donate_argnums)

    @functools.wraps(step)
    def checked(params, opt_state, x, y, key):
        parallel.check_batch_size(mesh, x.shape[0])  # before jit's own, less telling, error
        return sharded(params, opt_state, x, y, key)

    return checked


def make_eval_step(model: Layer, loss_fn):
    """A jitted ``(params, x, y) -> metrics`` with the batch's mean ``loss``, ``accuracy`` and ``predictions``."""

    def step(params, x, y):
        logits = model.apply(params, x, train=False)
        preds = jnp.argmax(logits, axis=-1) if logits.ndim == 2 else logits
        return {"loss": loss_fn(logits, y), "accuracy": accuracy(logits, y), "predictions": preds}

    return jax.jit(step)
