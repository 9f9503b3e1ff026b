"""Combinators beyond ``serial``: branches, fan-in by sum or concatenation, residual blocks.

In the spirit of stax's ``FanOut``/``parallel``/``FanInSum``/``FanInConcat``:
a layer may produce or take a *tuple* of arrays, and its shape is then the
tuple of their shapes. Params are plain pytrees (a tuple of the children's
params, or ``{"body": ..., "shortcut": ...}`` for ``residual``); state, when a
child has some, mirrors params (see ``tinyfn.layers.base``). Keys are split
once per child, like ``serial``.

An Inception-style block::

    serial(branch(Conv2D(8, 1), serial(Conv2D(8, 1), ReLU(), Conv2D(8, 3, padding=1))), concat())

A ResNet basic block::

    residual(serial(Conv2D(16, 3, padding=1), BatchNorm2D(), ReLU(), Conv2D(16, 3, padding=1), BatchNorm2D()))
"""

from __future__ import annotations

from functools import partial
from types import MappingProxyType

import jax
import jax.numpy as jnp

from tinyfn import _checks
from tinyfn.layers.base import Layer, apply_with_state, has_state, init_with_state, stateful_apply_error

__all__ = ["identity", "Identity", "branch", "parallel", "fan_out", "add", "Add", "concat", "Concat", "residual"]


def _check_layers(op, layers):
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"{op}: argument {i} must be a Layer (an init/apply pair), got {type(layer).__name__}")
    return tuple(layers)


def _check_tuple(op, what, value, n=None):
    if not isinstance(value, (tuple, list)) or (n is not None and len(value) != n):
        size = f" of {n}" if n is not None else ""
        got = f"a {type(value).__name__}" + (f" of length {len(value)}" if hasattr(value, "__len__") else "")
        raise ValueError(f"{op}: {what} must be a tuple{size}, got {got}")
    return tuple(value)


def _keys(key, n):
    return jax.random.split(key, n) if key is not None and n else [None] * n


def _multi(op, layers, inputs_of, output_of, config=MappingProxyType({})):
    """A combinator whose children run on ``inputs_of(x, n)`` and whose result is ``output_of(ys)``.

    ``inputs_of`` maps the input (shape or array, the same code for both) to one input per child;
    ``output_of`` maps the children's outputs (shapes or arrays) to the combinator's.
    """
    n = len(layers)

    def init(key, input_shape):
        shapes, params = [], []
        for layer, k, s in zip(layers, jax.random.split(key, n), inputs_of(input_shape, n, shapes=True)):
            shape, p = layer.init(k, s)
            shapes.append(shape)
            params.append(p)
        return output_of(tuple(shapes), shapes=True), tuple(params)

    def apply(params, x, *, key=None, train=False):
        params = _check_tuple(op, "params", params, n)
        ys = [layer.apply(p, xi, key=k, train=train) for layer, p, xi, k in zip(layers, params, inputs_of(x, n), _keys(key, n))]
        return output_of(tuple(ys))

    if not any(has_state(layer) for layer in layers):
        return Layer(init, apply, op, config, layers)

    def init_stateful(key, input_shape):
        out = [init_with_state(layer, k, s) for layer, k, s in zip(layers, jax.random.split(key, n), inputs_of(input_shape, n, shapes=True))]
        return output_of(tuple(o[0] for o in out), shapes=True), tuple(o[1] for o in out), tuple(o[2] for o in out)

    def apply_stateful(params, state, x, *, key=None, train=False):
        params, state = _check_tuple(op, "params", params, n), _check_tuple(op, "state", state, n)
        out = [
            apply_with_state(layer, p, s, xi, key=k, train=train)
            for layer, p, s, xi, k in zip(layers, params, state, inputs_of(x, n), _keys(key, n))
        ]
        return output_of(tuple(o[0] for o in out)), tuple(o[1] for o in out)

    return Layer(init, stateful_apply_error(op), op, config, layers, init_stateful, apply_stateful)


def branch(*layers: Layer) -> Layer:
    """Run every layer on the same input; the output is the tuple of their outputs (stax's ``FanOut`` + ``parallel``).

    Follow it with ``add()`` or ``concat()`` to merge the branches.
    """
    layers = _check_layers("branch", layers)
    return _multi("branch", layers, lambda x, n, shapes=False: (x,) * n, lambda ys, shapes=False: ys)


def parallel(*layers: Layer) -> Layer:
    """Run layer ``i`` on input ``i`` of a tuple; the output is the tuple of the outputs (stax's ``parallel``)."""
    layers = _check_layers("parallel", layers)

    def inputs_of(x, n, shapes=False):
        return _check_tuple("parallel", "input_shape" if shapes else "x", x, n)

    return _multi("parallel", layers, inputs_of, lambda ys, shapes=False: ys)


def fan_out(n: int) -> Layer:
    """``x -> (x, ..., x)`` (``n`` copies; no params). Its gradient sums the copies' cotangents (JAX's fan-out)."""
    n = _checks.positive_int("n", n, op="fan_out")

    def init(key, input_shape):
        return (tuple(input_shape),) * n, {}

    def apply(params, x, *, key=None, train=False):
        return (x,) * n

    return Layer(init, apply, "fan_out", MappingProxyType({"n": n}))


def identity() -> Layer:
    """``x -> x`` (no params)."""

    def init(key, input_shape):
        return tuple(input_shape), {}

    def apply(params, x, *, key=None, train=False):
        return x

    return Layer(init, apply, "Identity", MappingProxyType({}))


Identity = identity


def _plain_sum(xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


@jax.custom_vjp
def _sum(xs):
    return _plain_sum(xs)


def _sum_fwd(xs):  # the plain forward, so that forward mode runs through it
    return _plain_sum(xs), len(xs)


def _sum_bwd(n, g):
    # Law 1: y = [I I … I] [x₁; …; xₙ]  =>  dxᵢ = Iᵀ g = g for every input.
    return ((g,) * n,)


_sum.defvjp(_sum_fwd, _sum_bwd)


def _check_inputs(op, xs):
    xs = _check_tuple(op, "x", xs)
    if not xs:
        raise ValueError(f"{op}: x must hold at least one array, got an empty tuple")
    return tuple(_checks.float_array(f"x[{i}]", x, op=op) for i, x in enumerate(xs))


def add_arrays(xs):
    """``x₁ + … + xₙ`` of same-shape, same-dtype arrays (no broadcasting). Backward (handwritten): ``g`` to each."""
    xs = _check_inputs("add", xs)
    for i, x in enumerate(xs[1:], 1):
        if x.shape != xs[0].shape or x.dtype != xs[0].dtype:
            raise ValueError(f"add: x[{i}] has shape {x.shape} and dtype {x.dtype}, expected x[0]'s {xs[0].shape} and {xs[0].dtype}")
    return _sum(xs)


def _check_shapes(op, shapes):
    shapes = _check_tuple(op, "input_shape (a tuple of shapes)", shapes)
    if not shapes or not all(isinstance(s, (tuple, list)) for s in shapes):
        raise ValueError(f"{op}: input_shape must be a non-empty tuple of shapes (one per branch), got {shapes!r}")
    return tuple(tuple(s) for s in shapes)


def add() -> Layer:
    """Fan-in by sum: ``(x₁, …, xₙ) -> Σ xᵢ``, all of one shape (stax's ``FanInSum``; no params)."""

    def init(key, input_shape):
        shapes = _check_shapes("add", input_shape)
        for i, s in enumerate(shapes[1:], 1):
            if s[1:] != shapes[0][1:]:
                raise ValueError(f"add: branch {i} has shape {s}, expected branch 0's {shapes[0]}")
        return shapes[0], {}

    def apply(params, x, *, key=None, train=False):
        return add_arrays(x)

    return Layer(init, apply, "add", MappingProxyType({}))


Add = add


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _concat(xs, axis):
    return jnp.concatenate(xs, axis=axis)


def _concat_fwd(xs, axis):  # the plain forward, so that forward mode runs through it
    return jnp.concatenate(xs, axis=axis), tuple(x.shape[axis] for x in xs)


def _concat_bwd(axis, sizes, g):
    # Law 1: y = [I₁; …; Iₙ] stacking, each block a selection  =>  dxᵢ = the block of g at xᵢ's rows.
    bounds = [sum(sizes[:i]) for i in range(1, len(sizes))]
    return (tuple(jnp.split(g, bounds, axis=axis)),)


_concat.defvjp(_concat_fwd, _concat_bwd)


def concat_arrays(xs, axis: int = 1):
    """Concatenate arrays along ``axis`` (channels, ``1``, by default). Backward (handwritten): ``g`` split back."""
    xs = _check_inputs("concat", xs)
    ndim = xs[0].ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"concat: axis {axis} is out of range for rank {ndim}")
    axis %= ndim
    for i, x in enumerate(xs[1:], 1):
        if x.ndim != ndim or x.shape[:axis] + x.shape[axis + 1 :] != xs[0].shape[:axis] + xs[0].shape[axis + 1 :] or x.dtype != xs[0].dtype:
            raise ValueError(f"concat: x[{i}] has shape {x.shape} ({x.dtype}); it must match x[0] {xs[0].shape} ({xs[0].dtype}) except along axis {axis}")
    return _concat(xs, axis)


def concat(axis: int = 1) -> Layer:
    """Fan-in by concatenation along ``axis`` (channels by default; stax's ``FanInConcat``; no params)."""
    if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
        raise ValueError(f"concat: axis must be a non-batch int axis, got {axis!r}")

    def init(key, input_shape):
        shapes = _check_shapes("concat", input_shape)
        ndim = len(shapes[0])
        if not -ndim < axis < ndim or any(len(s) != ndim for s in shapes):
            raise ValueError(f"concat: axis {axis} does not fit the branch shapes {shapes}")
        a = axis % ndim
        for i, s in enumerate(shapes[1:], 1):
            if s[1:a] + s[a + 1 :] != shapes[0][1:a] + shapes[0][a + 1 :]:
                raise ValueError(f"concat: branch {i} has shape {s}, which differs from branch 0's {shapes[0]} outside axis {a}")
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        return tuple(out), {}

    def apply(params, x, *, key=None, train=False):
        return concat_arrays(x, axis)

    return Layer(init, apply, "concat", MappingProxyType({"axis": axis}))


Concat = concat


def residual(body: Layer, projection: Layer | None = None) -> Layer:
    """``y = body(x) + shortcut(x)``, the shortcut being ``projection`` or the identity (He et al.'s residual block).

    Use a ``projection`` (e.g. ``serial(Conv2D(c, 1, stride=2), BatchNorm2D())``)
    when ``body`` changes the shape. Params ``{"body": ..., "shortcut": ...}``;
    the sum's backward sends ``g`` to both paths.
    """
    shortcut = identity() if projection is None else projection
    layers = _check_layers("residual", (body, shortcut))
    inner = _multi("residual", layers, lambda x, n, shapes=False: (x, x), _residual_sum)
    names = ("body", "shortcut")

    def init(key, input_shape):
        shape, (pb, ps) = inner.init(key, input_shape)
        return shape, {"body": pb, "shortcut": ps}

    def apply(params, x, *, key=None, train=False):
        return inner.apply(_as_pair(params, "params"), x, key=key, train=train)

    children = (body,) if projection is None else (body, projection)
    config = MappingProxyType({})
    if not has_state(inner):
        return Layer(init, apply, "residual", config, children)

    def init_stateful(key, input_shape):
        shape, (pb, ps), (sb, ss) = inner.init_with_state(key, input_shape)
        return shape, dict(zip(names, (pb, ps))), dict(zip(names, (sb, ss)))

    def apply_stateful(params, state, x, *, key=None, train=False):
        y, (sb, ss) = inner.apply_with_state(_as_pair(params, "params"), _as_pair(state, "state"), x, key=key, train=train)
        return y, {"body": sb, "shortcut": ss}

    return Layer(init, stateful_apply_error("residual"), "residual", config, children, init_stateful, apply_stateful)


def _as_pair(tree, what):
    if not isinstance(tree, dict) or set(tree) != {"body", "shortcut"}:
        got = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
        raise ValueError(f"residual: {what} must be a dict with keys 'body' and 'shortcut', got {got}")
    return tree["body"], tree["shortcut"]


def _residual_sum(ys, shapes=False):
    body, shortcut = ys
    if shapes:
        if tuple(body[1:]) != tuple(shortcut[1:]):
            raise ValueError(
                f"residual: the body's output shape {tuple(body)} differs from the shortcut's {tuple(shortcut)}; "
                "pass a projection (e.g. a 1x1 Conv2D with the body's stride) that maps x to the body's shape"
            )
        return tuple(body)
    return add_arrays((body, shortcut))
