"""Combinators beyond ``serial``: branches, fan-in by sum or concatenation, residual blocks.

In the spirit of stax's ``FanOut``/``parallel``/``FanInSum``/``FanInConcat``:
a layer may produce or take a *tuple* of arrays, and its shape is then the
tuple of their shapes. Params are plain pytrees (a tuple of the children's
params, or ``{"body": ..., "shortcut": ...}`` for ``residual``); state, when a
child has some, mirrors params (see ``tinyfn.layers.base``). Keys are split
once per child, like ``serial``. Each combinator is written once, in its
stateful form (``make_combinator``). stax's casing: layers are CamelCase
(``Identity``, ``FanOut``, ``Add``, ``Concat``), combinators that take layers
lowercase (``branch``, ``parallel``, ``residual``).

An Inception-style block::

    serial(branch(Conv2D(8, 1), serial(Conv2D(8, 1), ReLU(), Conv2D(8, 3, padding=1))), Concat())

A ResNet basic block::

    residual(serial(Conv2D(16, 3, padding=1), BatchNorm2D(), ReLU(), Conv2D(16, 3, padding=1), BatchNorm2D()))
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from tinyfn import _checks
from tinyfn.layers.base import Layer, apply_with_state, init_with_state, make_combinator, make_layer, split_keys

__all__ = ["Identity", "FanOut", "Add", "Concat", "branch", "parallel", "residual", "add_arrays", "concat_arrays"]


def _check_tuple(op, what, value, n=None):
    if not isinstance(value, (tuple, list)) or (n is not None and len(value) != n):
        size = f" of {n}" if n is not None else ""
        got = f"a {type(value).__name__}" + (f" of length {len(value)}" if hasattr(value, "__len__") else "")
        raise ValueError(f"{op}: {what} must be a tuple{size}, got {got}")
    return tuple(value)


def _fan(layers, inputs_of, output_of):
    """A combinator running layer ``i`` on ``inputs_of(x)[i]``, its output ``output_of(outputs)``.

    ``inputs_of`` and ``output_of`` take shapes at init (``shapes=True``) and arrays at apply: the same code.
    """

    def init(key, input_shape):
        keys, inputs = split_keys(key, len(layers)), inputs_of(input_shape, True)
        out = [init_with_state(c, k, s) for c, k, s in zip(layers, keys, inputs)]
        return output_of(tuple(o[0] for o in out), True), [o[1] for o in out], [o[2] for o in out]

    def apply(params, state, x, *, key=None, train=False):
        keys, inputs = split_keys(key, len(layers)), inputs_of(x)
        out = [apply_with_state(*a, key=k, train=train) for *a, k in zip(layers, params, state, inputs, keys)]
        return output_of(tuple(o[0] for o in out)), [o[1] for o in out]

    return init, apply


def branch(*layers: Layer) -> Layer:
    """Run every layer on the same input; the output is the tuple of their outputs (stax's ``FanOut`` + ``parallel``).

    Follow it with ``Add()`` or ``Concat()`` to merge the branches.
    """
    init, apply = _fan(layers, lambda x, shapes=False: (x,) * len(layers), lambda ys, shapes=False: ys)
    return make_combinator("branch", layers, init, apply)


def parallel(*layers: Layer) -> Layer:
    """Run layer ``i`` on input ``i`` of a tuple; the output is the tuple of the outputs (stax's ``parallel``)."""
    n = len(layers)

    def inputs_of(x, shapes=False):
        if shapes:
            return _checks.input_shapes(x, n=n, each="one per layer", flat=False, op="parallel")
        if not isinstance(x, (tuple, list)) or len(x) != n:
            got = f"a {type(x).__name__}" + (f" of length {len(x)}" if isinstance(x, (tuple, list)) else "")
            raise ValueError(f"parallel: x must be a tuple of {n} arrays, one per layer, got {got}")
        return tuple(x)

    init, apply = _fan(layers, inputs_of, lambda ys, shapes=False: ys)
    return make_combinator("parallel", layers, init, apply)


def FanOut(n: int) -> Layer:
    """``x -> (x, ..., x)`` (``n`` copies; no params). Its gradient sums the copies' cotangents (JAX's fan-out)."""
    n = _checks.positive_int("n", n, op="FanOut")

    def init(key, input_shape):
        return (_checks.input_shape(input_shape, op="FanOut"),) * n, {}

    def apply(params, x, *, key=None, train=False):
        return (x,) * n

    return make_layer("FanOut", init, apply, config={"n": n})


def Identity() -> Layer:
    """``x -> x`` (no params)."""

    def init(key, input_shape):
        return _checks.input_shape(input_shape, op="Identity"), {}

    def apply(params, x, *, key=None, train=False):
        return x

    return make_layer("Identity", init, apply)


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
            raise ValueError(
                f"add: x[{i}] has shape {x.shape} and dtype {x.dtype}, expected x[0]'s {xs[0].shape} and {xs[0].dtype}"
            )
    return _sum(xs)


def Add() -> Layer:
    """Fan-in by sum: ``(x₁, …, xₙ) -> Σ xᵢ``, all of one shape (stax's ``FanInSum``; no params)."""

    def init(key, input_shape):
        shapes = _checks.input_shapes(input_shape, op="Add")
        for i, s in enumerate(shapes[1:], 1):
            if s[1:] != shapes[0][1:]:
                raise ValueError(f"Add: branch {i} has shape {s}, expected branch 0's {shapes[0]}")
        return shapes[0], {}

    def apply(params, x, *, key=None, train=False):
        return add_arrays(x)

    return make_layer("Add", init, apply)


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
        if (
            x.ndim != ndim
            or x.shape[:axis] + x.shape[axis + 1 :] != xs[0].shape[:axis] + xs[0].shape[axis + 1 :]
            or x.dtype != xs[0].dtype
        ):
            raise ValueError(
                f"concat: x[{i}] has shape {x.shape} ({x.dtype}); it must match x[0] {xs[0].shape} ({xs[0].dtype}) "
                f"except along axis {axis}"
            )
    return _concat(xs, axis)


def Concat(axis: int = 1) -> Layer:
    """Fan-in by concatenation along ``axis`` (channels by default; stax's ``FanInConcat``; no params)."""
    if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
        raise ValueError(f"Concat: axis must be a non-batch int axis, got {axis!r}")

    def init(key, input_shape):
        shapes = _checks.input_shapes(input_shape, op="Concat")
        ndim = len(shapes[0])
        if not -ndim < axis < ndim or any(len(s) != ndim for s in shapes):
            raise ValueError(f"Concat: axis {axis} does not fit the branch shapes {shapes}")
        a = axis % ndim
        for i, s in enumerate(shapes[1:], 1):
            if s[1:a] + s[a + 1 :] != shapes[0][1:a] + shapes[0][a + 1 :]:
                raise ValueError(
                    f"Concat: branch {i} has shape {s}, which differs from branch 0's {shapes[0]} outside axis {a}"
                )
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        return tuple(out), {}

    def apply(params, x, *, key=None, train=False):
        return concat_arrays(x, axis)

    return make_layer("Concat", init, apply, config={"axis": axis})


def residual(body: Layer, projection: Layer | None = None) -> Layer:
    """``y = body(x) + shortcut(x)``, the shortcut being ``projection`` or the identity (He et al.'s residual block).

    Use a ``projection`` (e.g. ``serial(Conv2D(c, 1, stride=2), BatchNorm2D())``)
    when ``body`` changes the shape. Params (and state) ``{"body": ..., "shortcut": ...}``;
    the sum's backward sends ``g`` to both paths.
    """
    children = (body,) if projection is None else (body, projection)
    layers = (body, Identity() if projection is None else projection)
    init, apply = _fan(layers, lambda x, shapes=False: (x, x), _residual_sum)
    return make_combinator("residual", layers, init, apply, keys=("body", "shortcut"), children=children)


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
