"""The layer contract and the ``serial`` combinator.

A layer is a pair of pure functions::

    init(key, input_shape) -> (output_shape, params)
    apply(params, x, *, key=None, train=False) -> y

``input_shape`` includes the batch dimension, which may be ``None`` (any batch
size) or an int; ``init`` computes ``output_shape`` without running the layer.
``params`` is a plain pytree: a dict such as ``{"w": ..., "b": ...}`` for one
layer, ``{}`` for a layer without parameters, a tuple of the children's params
for ``serial``. ``key`` feeds the layers that draw random numbers at apply
time (dropout) and ``train`` switches them between training and evaluation.
Every ``apply`` first checks ``params`` against what ``init`` makes for the
input's shape (``check_params``: keys, shapes, kinds of dtype), once per input
shape and at trace time under ``jit``, and names the wrong entry.

Besides the two functions a ``Layer`` carries its ``name``, its constructor
arguments (``config``) and, for combinators, its ``children``, so tools such as
checkpoints and visualisations can read a model's structure.

State (batch norm's running statistics) is a second pytree, threaded beside
params the way Haiku's ``transform_with_state`` does it. A stateful layer fills
two more fields::

    init_with_state(key, input_shape) -> (output_shape, params, state)
    apply_with_state(params, state, x, *, key=None, train=False) -> (y, new_state)

and its plain ``init`` still returns ``(output_shape, params)`` while its plain
``apply`` raises, naming the functions to use. Stateless layers leave both
fields ``None``: their signatures, and a ``serial`` of them, are exactly as
above. The module functions ``init_with_state``/``apply_with_state`` accept
every layer (a stateless one has state ``{}``), so training code treats all
models alike; ``has_state(layer)`` tells them apart. A combinator is stateful
when a child is, and its state mirrors its params (the tuple of the
children's states for ``serial``).

Why a separate pytree, and not state inside params or a mutable object:
gradients are taken with respect to params only and optimizers never see the
statistics; ``apply_with_state`` stays a pure function that ``jit``, ``grad``
(``has_aux``) and sharding handle like any other; and the state saves and
restores like params, so training resumes bit-identically.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

import jax

from tinyfn import _checks

__all__ = ["Layer", "serial", "parameterless", "check_params", "has_state", "init_with_state", "apply_with_state"]


class Layer(NamedTuple):
    init: Callable[..., tuple[tuple, Any]]
    apply: Callable[..., Any]
    name: str = "Layer"
    config: Mapping[str, Any] = MappingProxyType({})
    children: tuple["Layer", ...] = ()
    init_with_state: Callable[..., tuple[tuple, Any, Any]] | None = None  # stateful layers only
    apply_with_state: Callable[..., tuple[Any, Any]] | None = None  # stateful layers only

    def __repr__(self) -> str:
        if self.children:
            inner = ",\n".join("  " + repr(c).replace("\n", "\n  ") for c in self.children)
            return f"{self.name}(\n{inner}\n)"
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{self.name}({args})"


def has_state(layer: Layer) -> bool:
    """Whether ``layer`` (or a child) carries state besides its params."""
    return layer.apply_with_state is not None


def init_with_state(layer: Layer, key, input_shape) -> tuple[tuple, Any, Any]:
    """``(output_shape, params, state)`` for any layer; a stateless layer's state is ``{}``."""
    if layer.init_with_state is not None:
        return layer.init_with_state(key, input_shape)
    shape, params = layer.init(key, input_shape)
    return shape, params, {}


def apply_with_state(layer: Layer, params, state, x, *, key=None, train=False):
    """``(y, new_state)`` for any layer; a stateless layer returns ``state`` unchanged."""
    if layer.apply_with_state is not None:
        return layer.apply_with_state(params, state, x, key=key, train=train)
    return layer.apply(params, x, key=key, train=train), state


def stateful_apply_error(name: str) -> Callable:
    """The plain ``apply`` of a stateful layer: it raises, naming what to call instead."""

    def apply(params, x, *, key=None, train=False):
        raise TypeError(
            f"{name}: this layer carries state (running statistics); use "
            f"tinyfn.layers.init_with_state(model, key, shape) and "
            f"tinyfn.layers.apply_with_state(model, params, state, x, key=..., train=...) -> (y, new_state)"
        )

    return apply


def _check_shape(name: str, input_shape, ndim: int, layout: str) -> tuple:
    """``_checks.input_shape`` with a fixed rank (kept for the layers that import it from here)."""
    return _checks.input_shape(input_shape, ndim=ndim, layout=layout, op=name)


def _check_any_shape(name: str, input_shape) -> tuple:
    """``_checks.input_shape`` of any rank (kept for the layers that import it from here)."""
    return _checks.input_shape(input_shape, op=name)


def check_params(name: str, init: Callable, params, x, *, where: Callable | None = None) -> None:
    """Check ``params`` against what ``init`` makes for ``x``'s shape: keys, shapes and kinds of dtype.

    Every layer calls it first in its ``apply`` (a custom layer should too).
    Shapes are static, so under ``jit`` it runs once, at trace time; eagerly it
    costs a cached lookup (per ``init`` and input shape) and a walk over the
    tree. The error names the wrong entry (``Conv2D: params lacks 'b' and has
    unexpected 'bias' ...``, ``Linear: params['w'] has shape (3, 4), expected
    (5, 4) ...``). If ``init`` refuses ``x``'s shape, nothing is checked here
    and the op reports the input. See ``tinyfn._checks.layer_params``.
    """
    _checks.layer_params(init, params, x, op=name, where=where)


def parameterless(name: str, fn: Callable, shape_fn: Callable | None = None, **config) -> Layer:
    """A layer without parameters applying ``fn(x)``; ``shape_fn`` maps (checked) shapes, identity by default."""

    def init(key, input_shape):
        del key
        shape = _check_any_shape(name, input_shape)
        return (shape_fn(shape) if shape_fn else shape), {}

    def apply(params, x, *, key=None, train=False):
        del key, train
        check_params(name, init, params, x)
        return fn(x)

    return Layer(init, apply, name, MappingProxyType(dict(config)))


def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence; params are the tuple of the children's params.

    ``init`` threads the shape through the children and gives each its own key
    (split once); ``apply`` splits ``key`` the same way when one is given.

    >>> from tinyfn.layers import Conv2D, ReLU, Flatten, Linear, serial
    >>> model = serial(Conv2D(4, 3), ReLU(), Flatten(), Linear(10))
    >>> shape, params = model.init(jax.random.key(0), (None, 1, 8, 8))
    >>> shape, [jax.tree_util.tree_map(lambda a: a.shape, p) for p in params]
    ((None, 10), [{'b': (4,), 'w': (4, 1, 3, 3)}, {}, {}, {'b': (10,), 'w': (144, 10)}])
    """
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"serial: argument {i} must be a Layer (an init/apply pair), got {type(layer).__name__}")
    n = len(layers)

    def _owner(path: str) -> str:
        if not path.startswith("params["):
            return ""
        i = int(path[len("params[") : path.index("]")])
        return f"layer {i}, {layers[i].name}"

    def init(key, input_shape):
        keys = jax.random.split(key, n) if n else []
        shape, params = tuple(input_shape), []
        for layer, k in zip(layers, keys):
            shape, p = layer.init(k, shape)
            params.append(p)
        return shape, tuple(params)

    def apply(params, x, *, key=None, train=False):
        if not isinstance(params, (tuple, list)) or len(params) != n:
            got = f"a {type(params).__name__} of length {len(params)}" if hasattr(params, "__len__") else repr(params)
            raise ValueError(f"serial: params must be a tuple with one entry per layer ({n}), got {got}")
        check_params("serial", init, params, x, where=_owner)
        keys = jax.random.split(key, n) if key is not None else [None] * n
        for layer, p, k in zip(layers, params, keys):
            x = layer.apply(p, x, key=k, train=train)
        return x

    if not any(has_state(layer) for layer in layers):
        return Layer(init, apply, "serial", MappingProxyType({}), tuple(layers))

    def init_stateful(key, input_shape):
        keys = jax.random.split(key, n) if n else []
        shape, params, states = tuple(input_shape), [], []
        for layer, k in zip(layers, keys):
            shape, p, s = init_with_state(layer, k, shape)
            params.append(p)
            states.append(s)
        return shape, tuple(params), tuple(states)

    def apply_stateful(params, state, x, *, key=None, train=False):
        for name, tree in (("params", params), ("state", state)):
            if not isinstance(tree, (tuple, list)) or len(tree) != n:
                got = f"a {type(tree).__name__} of length {len(tree)}" if hasattr(tree, "__len__") else repr(tree)
                raise ValueError(f"serial: {name} must be a tuple with one entry per layer ({n}), got {got}")
        keys = jax.random.split(key, n) if key is not None else [None] * n
        new_state = []
        for layer, p, s, k in zip(layers, params, state, keys):
            x, s = apply_with_state(layer, p, s, x, key=k, train=train)
            new_state.append(s)
        return x, tuple(new_state)

    return Layer(init, stateful_apply_error("serial"), "serial", MappingProxyType({}), tuple(layers), init_stateful, apply_stateful)
