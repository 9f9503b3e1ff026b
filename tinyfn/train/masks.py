"""Updates changed where a mask says: ``freeze(mask)`` and ``scale_where(mask, factor)``, optax-protocol atoms.

``mask`` is a tree of bools shaped like the params (``tinyfn.layers.param_mask(model, params, include=(...))``), or a
function ``params -> such a tree``. Chain them *after* the optimizer, so that they act on the final updates (weight
decay and momentum included, and after Adam's normalisation, which would undo a scaled gradient)::

    frozen = tinyfn.layers.param_mask(model, params, include=("conv1", "bn1"))
    optimizer = chain(sgd(0.1, momentum=0.9), freeze(frozen))  # conv1 and bn1 keep their values bit for bit
    optimizer = chain(adam(1e-3), scale_where(param_mask(model, params, include=("linear*",)), 10.0))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tinyfn.train.optim import EmptyState, GradientTransformation, _decay_mask

__all__ = ["freeze", "scale_where"]


def scale_where(mask, factor: float) -> GradientTransformation:
    """Multiply the updates by ``factor`` where ``mask`` is ``True`` (a per-layer learning rate); stateless.
    ``factor=0`` sets them to exact zeros."""
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor < 0:
        raise ValueError(f"scale_where: factor must be a number >= 0, got {factor!r}")

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        op = "scale_where" if factor else "freeze"
        flags = _decay_mask(
            op, mask, updates, meaning="True where the updates are scaled" if factor else "True where frozen"
        )
        leaves, structure = jax.tree_util.tree_flatten(updates)
        scaled = [(u * factor if factor else jnp.zeros_like(u)) if f else u for u, f in zip(leaves, flags)]
        return jax.tree_util.tree_unflatten(structure, scaled), state

    return GradientTransformation(init, update)


def freeze(mask) -> GradientTransformation:
    """Zero the updates where ``mask`` is ``True``: those params keep their values bit for bit."""
    return scale_where(mask, 0.0)
