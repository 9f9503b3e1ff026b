"""Log-sum-exp and log-softmax, computed stably: the plain forward math shared by ``softmax``, ``log_softmax`` and
the losses.

These are ordinary JAX functions (differentiable by JAX, forward mode
included). The ops call them inside their ``custom_vjp`` rules, whose
backward passes are handwritten.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["logsumexp", "log_softmax"]


def logsumexp(x, axis: int):
    """``log Σ exp(x)`` along ``axis`` (kept as a size-1 axis), with the max subtracted so that nothing overflows."""
    top = jax.lax.stop_gradient(x.max(axis=axis, keepdims=True))  # the shift cancels: no gradient through it
    return top + jnp.log(jnp.exp(x - top).sum(axis=axis, keepdims=True))


def log_softmax(x, axis: int):
    """``x - logsumexp(x)`` along ``axis``."""
    shifted = x - jax.lax.stop_gradient(x.max(axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.exp(shifted).sum(axis=axis, keepdims=True))
