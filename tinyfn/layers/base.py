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
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

import jax

from tinyfn import _checks

__all__ = ["Layer", "serial", "parameterless", "check_params"]


class Layer(NamedTuple):
    init: Callable[..., tuple[tuple, Any]]
    apply: Callable[..., Any]
    name: str = "Layer"
    config: Mapping[str, Any] = MappingProxyType({})
    children: tuple["Layer", ...] = ()

    def __repr__(self) -> str:
        if self.children:
            inner = ",\n".join("  " + repr(c).replace("\n", "\n  ") for c in self.children)
            return f"{self.name}(\n{inner}\n)"
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{self.name}({args})"


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

    return Layer(init, apply, "serial", MappingProxyType({}), tuple(layers))
