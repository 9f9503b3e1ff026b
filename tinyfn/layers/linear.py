"""Fully connected layer: ``y = x @ w + b`` and its handwritten backward rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tinyfn import _checks, initializers
from tinyfn.layers import precision
from tinyfn.layers.base import Layer, make_layer

__all__ = ["linear", "Linear"]


def _plain_linear(x, w, b):
    y = x @ w
    return y if b is None else y + b[None, :]


@jax.custom_vjp
def _linear(x, w, b):
    return _plain_linear(x, w, b)


def _linear_fwd(x, w, b):  # the plain forward (not _linear itself), so that forward mode can run through this rule
    return _plain_linear(x, w, b), (x, w, b)


def _linear_bwd(res, g):
    x, w, b = res
    dx = g @ w.T  # Law 2: Y = X C + D with C = W  =>  dL/dX = dL/dY Wᵀ
    dw = x.T @ g  # Law 1: Y = A W + B with A = X  =>  dL/dW = Xᵀ dL/dY
    db = None if b is None else g.sum(axis=0)
    return dx, dw, db


_linear.defvjp(_linear_fwd, _linear_bwd)


def linear(x, w, b=None):
    """Affine map ``y = x @ w + b``.

    Args:
      x: ``(N, in)``, or ``(..., in)`` with any leading batch dimensions.
      w: ``(in, out)``.
      b: ``(out,)`` or ``None``.

    Returns:
      ``(N, out)`` (or ``(..., out)``).

    Backward (handwritten): ``dx = g wᵀ``, ``dw = xᵀ g``, ``db = Σ_N g``.
    """
    x = _checks.float_array("x", x, op="linear")
    w = _checks.float_array("w", w, ndim=2, layout="(in_features, out_features)", empty_batch=False, op="linear")
    if b is not None:
        b = _checks.float_array("b", b, ndim=1, layout="(out_features,)", empty_batch=False, op="linear")
    _checks.same_dtype("linear", x=x, w=w, b=b)
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"linear: x has shape {tuple(x.shape)} but w has shape {tuple(w.shape)}; "
            f"expected x's last dimension to equal w.shape[0] = {w.shape[0]}"
        )
    if b is not None and b.shape[0] != w.shape[1]:
        raise ValueError(f"linear: b has shape {tuple(b.shape)}, expected ({w.shape[1]},) to match w {tuple(w.shape)}")
    if x.ndim == 2:
        return _linear(x, w, b)
    lead = x.shape[:-1]
    return _linear(x.reshape(-1, w.shape[0]), w, b).reshape(*lead, w.shape[1])


def Linear(
    out_features: int, *, use_bias: bool = True, w_init="he_normal", dtype=jnp.float32, compute_dtype=None
) -> Layer:
    """Fully connected layer with params ``{"w": (in, out), "b": (out,)}``.

    ``w`` is drawn by ``w_init`` (He normal, ``N(0, 2/in)``, by default: the
    right scale for a ReLU net), ``b`` starts at zero. Input ``(N, in)`` or
    ``(..., in)``, output ``(..., out_features)``. ``compute_dtype`` (e.g.
    ``jnp.bfloat16``): params stay ``dtype``, the products and the output are in
    ``compute_dtype`` (see ``tinyfn.layers.precision``).

    >>> _, p = Linear(3).init(jax.random.key(0), (None, 2))
    >>> {k: v.shape for k, v in p.items()}
    {'w': (2, 3), 'b': (3,)}
    """
    out_features = _checks.positive_int("out_features", out_features, op="Linear")
    compute_dtype = precision.check_compute_dtype("Linear", compute_dtype)
    w_init = initializers.get(w_init)

    def init(key, input_shape):
        shape = _checks.input_shape(input_shape, op="Linear")
        if len(shape) < 2:
            raise ValueError(f"Linear: input_shape must be (N, in_features) with in_features >= 1, got {shape}")
        fan_in = shape[-1]
        params = {"w": w_init(key, (fan_in, out_features), fan_in, out_features, dtype)}
        if use_bias:
            params["b"] = jnp.zeros((out_features,), dtype)
        return (*shape[:-1], out_features), params

    def apply(params, x, *, key=None, train=False):
        return linear(*precision.cast(compute_dtype, x, params["w"], params.get("b")))

    config = {"out_features": out_features, "use_bias": use_bias}
    if compute_dtype is not None:
        config["compute_dtype"] = compute_dtype
    return make_layer("Linear", init, apply, config=config)
