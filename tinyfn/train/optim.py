"""Stochastic gradient descent as a pure ``(init, update)`` pair, and learning-rate schedules.

With gradient ``g``, weight decay ``λ``, momentum ``μ`` and learning rate ``η_t``
(PyTorch's ``torch.optim.SGD`` conventions, no dampening)::

    d = g + λ p
    v ← μ v + d                      (when μ > 0)
    step = d + μ v  if nesterov  else  v
    p ← p - η_t step
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Optimizer", "sgd", "constant", "step_decay", "cosine"]


class Optimizer(NamedTuple):
    """``init(params) -> state`` and ``update(grads, state, params) -> (params, state)``, both pure."""

    init: Callable
    update: Callable


def constant(learning_rate: float) -> Callable:
    """``step -> learning_rate``."""
    return lambda step: jnp.asarray(learning_rate)  # weakly typed: takes the params' precision


def step_decay(learning_rate: float, step_size: int, gamma: float = 0.1) -> Callable:
    """``learning_rate · gamma ** floor(step / step_size)``."""
    if step_size < 1:
        raise ValueError(f"step_size must be a positive int, got {step_size}")
    return lambda step: learning_rate * gamma ** jnp.floor_divide(step, step_size)


def cosine(learning_rate: float, total_steps: int, final_learning_rate: float = 0.0, warmup_steps: int = 0) -> Callable:
    """Linear warm-up over ``warmup_steps``, then a half cosine from ``learning_rate`` to ``final_learning_rate``
    at ``total_steps`` (constant afterwards)."""
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got warmup_steps={warmup_steps}, total_steps={total_steps}")

    def schedule(step):
        step = jnp.asarray(step) * 1.0
        warm = learning_rate * (step + 1) / max(warmup_steps, 1)
        t = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
        decayed = final_learning_rate + 0.5 * (learning_rate - final_learning_rate) * (1 + jnp.cos(math.pi * t))
        return jnp.where(step < warmup_steps, warm, decayed)

    return schedule


def _check_number(name, value, lo, hi=math.inf):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value < hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}), got {value!r}")
    return float(value)


def sgd(learning_rate, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> Optimizer:
    """SGD with optional (Nesterov) momentum and L2 weight decay, over any params pytree.

    ``learning_rate`` is a number or a schedule ``step -> lr`` (``constant``,
    ``step_decay``, ``cosine`` or your own). The state holds the step count
    and, with momentum, one velocity per parameter.
    """
    schedule = learning_rate if callable(learning_rate) else constant(_check_number("learning_rate", learning_rate, 0.0))
    momentum = _check_number("momentum", momentum, 0.0, 1.0)
    weight_decay = _check_number("weight_decay", weight_decay, 0.0)
    if nesterov and momentum == 0.0:
        raise ValueError("nesterov=True needs momentum > 0")

    def init(params):
        velocity = jax.tree_util.tree_map(jnp.zeros_like, params) if momentum else None
        return {"step": jnp.zeros((), jnp.int32), "velocity": velocity}

    def update(grads, state, params):
        _check_trees(grads, params)
        lr = schedule(state["step"])
        d = grads if not weight_decay else jax.tree_util.tree_map(lambda g, p: g + weight_decay * p, grads, params)
        velocity = state["velocity"]
        if momentum:
            velocity = jax.tree_util.tree_map(lambda v, g: momentum * v + g, velocity, d)
            d = jax.tree_util.tree_map(lambda g, v: g + momentum * v, d, velocity) if nesterov else velocity
        new = jax.tree_util.tree_map(lambda p, s: p - (lr * s).astype(p.dtype), params, d)
        return new, {"step": state["step"] + 1, "velocity": velocity}

    return Optimizer(init, update)


def _check_trees(grads, params):
    gs, ps = jax.tree_util.tree_structure(grads), jax.tree_util.tree_structure(params)
    if gs != ps:
        raise ValueError(f"grads and params have different tree structures:\n  grads:  {gs}\n  params: {ps}")
    for path, g, p in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(params)):
        if jnp.shape(g) != jnp.shape(p):
            raise ValueError(f"grads{jax.tree_util.keystr(path[0])} has shape {jnp.shape(g)} but the parameter has shape {jnp.shape(p)}")
