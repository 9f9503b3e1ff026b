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

Besides the two functions a ``Layer`` carries its ``name``, its constructor
arguments (``config``) and, for combinators, its ``children``, so tools such as
checkpoints and visualisations can read a model's structure.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

import jax

__all__ = ["Layer", "serial", "parameterless"]


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
    shape = tuple(input_shape)
    if len(shape) != ndim:
        raise ValueError(f"{name}: input_shape must have {ndim} entries {layout}, got {shape}")
    for d in shape[1:]:
        if not isinstance(d, int) or d < 1:
            raise ValueError(f"{name}: input_shape must hold positive ints after the batch entry, got {shape}")
    return shape


def _check_any_shape(name: str, input_shape) -> tuple:
    """An input shape of any rank: a batch entry (``None`` or an int >= 0), then positive ints."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{name}: input_shape must be a tuple of ints, got {input_shape!r}") from None
    if not shape:
        raise ValueError(f"{name}: input_shape must have a batch entry, got {shape}")
    batch, rest = shape[0], shape[1:]
    if not (batch is None or (isinstance(batch, int) and not isinstance(batch, bool) and batch >= 0)):
        raise ValueError(f"{name}: the batch entry of input_shape must be None or an int >= 0, got {shape}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in rest):
        raise ValueError(f"{name}: input_shape must hold positive ints after the batch entry, got {shape}")
    return shape


def parameterless(name: str, fn: Callable, shape_fn: Callable | None = None, **config) -> Layer:
    """A layer without parameters applying ``fn(x)``; ``shape_fn`` maps (checked) shapes, identity by default."""

    def init(key, input_shape):
        del key
        shape = _check_any_shape(name, input_shape)
        return (shape_fn(shape) if shape_fn else shape), {}

    def apply(params, x, *, key=None, train=False):
        del params, key, train
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
        keys = jax.random.split(key, n) if key is not None else [None] * n
        for layer, p, k in zip(layers, params, keys):
            x = layer.apply(p, x, key=k, train=train)
        return x

    return Layer(init, apply, "serial", MappingProxyType({}), tuple(layers))
