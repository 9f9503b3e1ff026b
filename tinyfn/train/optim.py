"""Optimizers as gradient transformations (optax's protocol), and learning-rate schedules.

A ``GradientTransformation`` is a pair of pure functions::

    init(params) -> state
    update(grads, state, params=None) -> (updates, state)

and ``apply_updates(params, updates)`` adds the updates: ``p ← p + u``. The updates already carry the learning rate
and the minus sign. This is optax's protocol exactly, so tinyfn's optimizers run inside ``optax.chain`` and any optax
transformation (``optax.adam(1e-3)``) runs in ``make_train_step``. States are NamedTuples (a tuple of them for
``chain``). tinyfn does not depend on optax.

With gradient ``g``, step ``t`` (from 1), learning rate ``η_t`` (a number or a schedule ``step -> lr`` evaluated at
``t - 1``) and weight decay ``λ``:

* ``sgd`` (PyTorch's ``torch.optim.SGD``, no dampening)::

      d = g + λ p;   v ← μ v + d;   u = -η_t (d + μ v  if nesterov  else  v)

* ``adam`` (Kingma & Ba; ``torch.optim.Adam``, ``λ`` is L2 added to the gradient)::

      d = g + λ p;   m ← β₁ m + (1-β₁) d;   s ← β₂ s + (1-β₂) d²
      u = -η_t m̂ / (√ŝ + ε),   m̂ = m / (1-β₁ᵗ),  ŝ = s / (1-β₂ᵗ)

* ``adamw`` (Loshchilov & Hutter's decoupled decay; ``torch.optim.AdamW``)::

      u = -η_t (m̂ / (√ŝ + ε) + λ p)          (m, s from g alone)

* ``clip_by_global_norm(c)``: ``u = g · min(1, c / ‖g‖₂)`` over the whole tree.

Precision: the arithmetic does not depend on the params' dtype. Counts, bias corrections, moments and velocities are
kept in float32 (float64 for float64 params) and only the update is cast to the params' dtype, so bfloat16 and float16
params train as float32 ones would (in bfloat16, ``0.999`` rounds to ``1.0`` and Adam's bias correction ``1 - β₂ᵗ``
would be 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class GradientTransformation(NamedTuple):
    """``init(params) -> state`` and ``update(grads, state, params=None) -> (updates, state)``, both pure."""

    init: Callable
    update: Callable


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


class SGDState(NamedTuple):
    count: jax.Array  # int32, steps taken
    velocity: Any  # a tree like params, or None without momentum


class AdamState(NamedTuple):
    count: jax.Array  # int32, steps taken
    mu: Any  # first moment, a tree like params
    nu: Any  # second moment, a tree like params


def apply_updates(params, updates):
    """``params + updates`` leaf by leaf, each sum in its parameter's dtype (optax's ``apply_updates``)."""
    return jax.tree_util.tree_map(lambda p, u: jnp.asarray(p + u.astype(jnp.result_type(p))), params, updates)


def as_gradient_transformation(optimizer, *, op: str = "optimizer"):
    """``optimizer`` if it follows the protocol (tinyfn's or optax's), else a ``TypeError`` saying what was expected."""
    if isinstance(optimizer, GradientTransformation):
        return optimizer
    init, update = getattr(optimizer, "init", None), getattr(optimizer, "update", None)
    if callable(init) and callable(update) and not isinstance(optimizer, type):
        return optimizer
    raise TypeError(
        f"{op}: optimizer must be a gradient transformation with init(params) -> state and "
        f"update(grads, state, params) -> (updates, state) (tinyfn.train.sgd/adam/adamw or an optax one), "
        f"got {type(optimizer).__name__}: {optimizer!r}"
    )


def constant(learning_rate: float) -> Callable:
    """``step -> learning_rate``."""
    return lambda step: jnp.asarray(learning_rate)  # weakly typed: takes the params' precision


def step_decay(learning_rate: float, step_size: int, gamma: float = 0.1) -> Callable:
    """``learning_rate · gamma ** floor(step / step_size)``."""
    if step_size < 1:
        raise ValueError(f"step_decay: step_size must be a positive int, got {step_size}")
    return lambda step: learning_rate * gamma ** jnp.floor_divide(step, step_size)


def cosine(learning_rate: float, total_steps: int, final_learning_rate: float = 0.0, warmup_steps: int = 0) -> Callable:
    """Linear warm-up over ``warmup_steps``, then a half cosine from ``learning_rate`` to ``final_learning_rate``
    at ``total_steps`` (constant afterwards).

    The warm-up is ``learning_rate · (step + 1) / warmup_steps``: the first step already moves (``learning_rate /
    warmup_steps``) and step ``warmup_steps - 1`` reaches the peak. This is ``optax.warmup_cosine_decay_schedule(0,
    learning_rate, warmup_steps, total_steps, final_learning_rate)`` one step ahead during the warm-up (optax's step 0
    has rate 0, a step that changes nothing) and equal to it from ``warmup_steps`` on.
    """
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"cosine: need 0 <= warmup_steps < total_steps, got warmup_steps={warmup_steps}, total_steps={total_steps}"
        )

    def schedule(step):
        step = jnp.asarray(step) * 1.0
        warm = learning_rate * (step + 1) / max(warmup_steps, 1)
        t = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
        decayed = final_learning_rate + 0.5 * (learning_rate - final_learning_rate) * (1 + jnp.cos(math.pi * t))
        return jnp.where(step < warmup_steps, warm, decayed)

    return schedule


def _check_number(op, name, value, lo, hi=math.inf, *, closed_hi=False):
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and lo <= value
        and (value <= hi if closed_hi else value < hi)
    )
    if not ok:
        raise ValueError(f"{op}: {name} must be a number in [{lo}, {hi}{']' if closed_hi else ')'}, got {value!r}")
    return float(value)


def _schedule(op, learning_rate):
    return (
        learning_rate if callable(learning_rate) else constant(_check_number(op, "learning_rate", learning_rate, 0.0))
    )


def _tree_map(f, *trees):
    return jax.tree_util.tree_map(f, *trees)


def _wide(a):
    """``a`` in its accumulation dtype: float32, or float64 for float64 arrays (never narrower than float32)."""
    return jnp.asarray(a).astype(jnp.promote_types(jnp.result_type(a), jnp.float32))


def _wide_zeros(params):
    return _tree_map(lambda p: jnp.zeros(jnp.shape(p), _wide(p).dtype), params)


def _check_trees(op, grads, params):
    gs, ps = jax.tree_util.tree_structure(grads), jax.tree_util.tree_structure(params)
    if gs != ps:
        raise ValueError(f"{op}: grads and params have different tree structures:\n  grads:  {gs}\n  params: {ps}")
    for path, g, p in zip(
        jax.tree_util.tree_flatten_with_path(params)[0],
        jax.tree_util.tree_leaves(grads),
        jax.tree_util.tree_leaves(params),
    ):
        if jnp.shape(g) != jnp.shape(p):
            raise ValueError(
                f"{op}: grads{jax.tree_util.keystr(path[0])} has shape {jnp.shape(g)} but the parameter has shape "
                f"{jnp.shape(p)}"
            )


_UNDECAYED = frozenset({"b", "bias", "gamma", "beta"})  # biases and the norms' scale and shift, by their role


def weights_only(params):
    """The decay mask of the usual recipes: ``True`` for filters and weight matrices, by each leaf's name and role.

    A leaf named ``b``/``bias`` (biases) or ``gamma``/``beta`` (batch and layer norm's scale and shift, of any rank:
    ``LayerNorm(normalized_ndim=2)``'s are 2-D) is left undecayed; any other leaf is decayed when it has two or more
    dimensions: ``adamw(lr, weight_decay=5e-2, mask=weights_only)``.
    """

    def decays(path, a):
        name = path[-1].key if path and isinstance(path[-1], jax.tree_util.DictKey) else None
        return name not in _UNDECAYED and jnp.ndim(a) >= 2

    return jax.tree_util.tree_map_with_path(decays, params)


def _decay_mask(op, mask, params, meaning="True where weight decay applies"):
    """``mask`` (a tree of bools shaped like ``params``, or a function of ``params`` giving one) as a list of Python
    bools, one per leaf; ``meaning`` says in the error what ``True`` stands for."""
    if mask is None:
        return None
    tree = mask(params) if callable(mask) else mask
    leaves, structure = jax.tree_util.tree_flatten(tree)
    if structure != jax.tree_util.tree_structure(params):
        raise ValueError(
            f"{op}: mask must have the params' tree structure ({meaning}), got\n  mask:   "
            f"{structure}\n  params: {jax.tree_util.tree_structure(params)}"
        )
    for path, leaf in zip(jax.tree_util.tree_flatten_with_path(tree)[0], leaves):
        if not isinstance(leaf, (bool, np.bool_)):
            raise TypeError(
                f"{op}: mask{jax.tree_util.keystr(path[0])} must be a Python bool, got {type(leaf).__name__} {leaf!r}"
            )
    return [bool(leaf) for leaf in leaves]


def _masked(decay, params):
    """``params`` with the leaves that take no weight decay replaced by zeros (so ``λ p`` vanishes there)."""
    if decay is None:
        return params
    leaves, structure = jax.tree_util.tree_flatten(params)
    return jax.tree_util.tree_unflatten(structure, [p if d else jnp.zeros_like(p) for p, d in zip(leaves, decay)])


def _check_mask_argument(op, mask):
    if mask is not None and not callable(mask) and not jax.tree_util.tree_leaves(mask):
        raise TypeError(
            f"{op}: mask must be a tree of bools like the params or a function params -> such a tree, got {mask!r}"
        )
    return mask


def _needs_params(op, params, weight_decay):
    if weight_decay and params is None:
        raise ValueError(f"{op}: weight_decay={weight_decay} needs params: call update(grads, state, params)")


def sgd(
    learning_rate, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0, mask=None
) -> GradientTransformation:
    """SGD with optional (Nesterov) momentum and L2 weight decay, over any params pytree.

    ``learning_rate`` is a number or a schedule ``step -> lr`` (``constant``, ``step_decay``, ``cosine`` or your own).
    The state is ``SGDState(count, velocity)``; ``velocity`` is ``None`` without momentum. ``mask`` (optax's meaning):
    a tree of bools like the params, or a function ``params -> tree`` (``weights_only``), ``True`` where the weight
    decay applies; ``None``: everywhere.

    >>> opt = sgd(0.1, momentum=0.9)
    >>> params = {"w": jnp.ones(2)}
    >>> updates, state = opt.update({"w": jnp.ones(2)}, opt.init(params), params)
    >>> apply_updates(params, updates)["w"].tolist(), int(state.count)
    ([0.8999999761581421, 0.8999999761581421], 1)
    """
    schedule = _schedule("sgd", learning_rate)
    momentum = _check_number("sgd", "momentum", momentum, 0.0, 1.0)
    weight_decay = _check_number("sgd", "weight_decay", weight_decay, 0.0)
    mask = _check_mask_argument("sgd", mask)
    if nesterov and momentum == 0.0:
        raise ValueError("sgd: nesterov=True needs momentum > 0")

    def init(params):
        velocity = _wide_zeros(params) if momentum else None
        return SGDState(jnp.zeros((), jnp.int32), velocity)

    def update(grads, state, params=None):
        _needs_params("sgd", params, weight_decay)
        if params is not None:
            _check_trees("sgd", grads, params)
        lr = schedule(state.count)
        decayed = _masked(_decay_mask("sgd", mask, params), params) if weight_decay else None
        d = _tree_map(_wide, grads)
        if weight_decay:
            d = _tree_map(lambda g, p: g + weight_decay * _wide(p), d, decayed)
        velocity = state.velocity
        if momentum:
            velocity = _tree_map(lambda v, g: momentum * v + g, velocity, d)
            d = _tree_map(lambda g, v: g + momentum * v, d, velocity) if nesterov else velocity
        updates = _tree_map(lambda g, s: -(lr * s).astype(jnp.result_type(g)), grads, d)
        return updates, SGDState(state.count + 1, velocity)

    return GradientTransformation(init, update)


def _adam(op, learning_rate, b1, b2, eps, weight_decay, decoupled, mask):
    schedule = _schedule(op, learning_rate)
    mask = _check_mask_argument(op, mask)
    b1 = _check_number(op, "b1", b1, 0.0, 1.0)
    b2 = _check_number(op, "b2", b2, 0.0, 1.0)
    eps = _check_number(op, "eps", eps, 0.0)
    weight_decay = _check_number(op, "weight_decay", weight_decay, 0.0)

    def init(params):
        return AdamState(jnp.zeros((), jnp.int32), _wide_zeros(params), _wide_zeros(params))

    def update(grads, state, params=None):
        _needs_params(op, params, weight_decay)
        if params is not None:
            _check_trees(op, grads, params)
        count = state.count + 1
        lr = schedule(state.count)
        decayed = _masked(_decay_mask(op, mask, params), params) if weight_decay else params
        d = _tree_map(_wide, grads)
        if weight_decay and not decoupled:
            d = _tree_map(lambda g, p: g + weight_decay * _wide(p), d, decayed)
        mu = _tree_map(lambda m, g: b1 * m + (1 - b1) * g.astype(m.dtype), state.mu, d)
        nu = _tree_map(lambda v, g: b2 * v + (1 - b2) * (g * g).astype(v.dtype), state.nu, d)

        def direction(g, m, v, p):
            t = count.astype(m.dtype)  # bias corrections in the moments' dtype (float32 at least), not the params'
            step = (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps)
            if decoupled and weight_decay:
                step = step + weight_decay * _wide(p).astype(m.dtype)
            return -(lr * step).astype(jnp.result_type(g))

        updates = _tree_map(direction, grads, mu, nu, decayed if params is not None else mu)
        return updates, AdamState(count, mu, nu)

    return GradientTransformation(init, update)


def adam(
    learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, mask=None
) -> GradientTransformation:
    """Adam with bias correction (``torch.optim.Adam``; ``weight_decay`` is L2 added to the gradient).

    State ``AdamState(count, mu, nu)``; ``learning_rate`` a number or a schedule; ``mask`` as in ``sgd``: where the
    weight decay applies.
    """
    return _adam("adam", learning_rate, b1, b2, eps, weight_decay, decoupled=False, mask=mask)


def adamw(
    learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01, mask=None
) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter; ``torch.optim.AdamW``, ``optax.adamw``).

    The decay ``-η_t λ p`` is added to the update, not to the gradient, so it is not rescaled by the second moment.
    State ``AdamState(count, mu, nu)``. ``mask`` (``optax.adamw``'s): a tree of bools like the params or a function
    ``params -> tree``, ``True`` where the decay applies (``weights_only``: not on batch norm's scale and shift nor on
    biases); ``None``: everywhere.
    """
    return _adam("adamw", learning_rate, b1, b2, eps, weight_decay, decoupled=True, mask=mask)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Scale the whole gradient tree by ``min(1, max_norm / ‖g‖₂)`` (optax's ``clip_by_global_norm``). Stateless."""
    max_norm = _check_number("clip_by_global_norm", "max_norm", max_norm, 0.0)
    if max_norm == 0.0:
        raise ValueError("clip_by_global_norm: max_norm must be > 0, got 0.0")

    def init(params):
        del params
        return EmptyState()

    def update(grads, state, params=None):
        del params
        leaves = jax.tree_util.tree_leaves(grads)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in leaves)) if leaves else jnp.zeros(())
        clipped = norm > max_norm
        return _tree_map(lambda g: jnp.where(clipped, g / norm.astype(g.dtype) * max_norm, g), grads), state

    return GradientTransformation(init, update)


def chain(*transformations) -> GradientTransformation:
    """Apply transformations in order, each to the previous one's updates (optax's ``chain``).

    The state is the tuple of their states. Each may be tinyfn's or optax's: ``chain(clip_by_global_norm(1.0),
    adamw(1e-3))``.
    """
    transformations = tuple(
        as_gradient_transformation(t, op=f"chain (argument {i})") for i, t in enumerate(transformations)
    )

    def init(params):
        return tuple(t.init(params) for t in transformations)

    def update(grads, state, params=None):
        if not isinstance(state, tuple) or len(state) != len(transformations):
            raise ValueError(
                f"chain: state must be a tuple of {len(transformations)} states, got {type(state).__name__}"
            )
        new_state = []
        for t, s in zip(transformations, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return GradientTransformation(init, update)
