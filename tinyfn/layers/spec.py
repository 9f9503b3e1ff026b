"""A model's architecture as JSON, and back: ``to_spec(model)`` and ``from_spec(spec)``.

A spec is the layer tree read from each layer's ``name``, ``config`` and
``children``::

    {"name": "serial", "config": {}, "children": [{"name": "Conv2D", "config": {"out_channels": 6, ...}}, ...]}

Tuples in configs become JSON lists and come back as tuples. ``from_spec``
rebuilds with the constructors in a registry holding every built-in layer and
combinator; ``register_layer`` adds your own. Names a layer had before (``RENAMED``:
``add`` is now ``Add``) still load. A name the user gave a layer (``Named``) is kept as ``"label"``; specs
without one still load. A layer the registry does not know
is named in the error, with where it sits in the tree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from tinyfn.layers.activation import LogSoftmax, ReLU, Softmax
from tinyfn.layers.avg_pool import AvgPool2D, GlobalAvgPool2D
from tinyfn.layers.base import Layer, serial
from tinyfn.layers.combinators import Add, Concat, FanOut, Identity, branch, parallel, residual
from tinyfn.layers.conv import Conv2D, Deconv2D
from tinyfn.layers.dropout import Dropout
from tinyfn.layers.linear import Linear
from tinyfn.layers.names import Named
from tinyfn.layers.norm import BatchNorm1D, BatchNorm2D, LayerNorm
from tinyfn.layers.pool import MaxPool2D
from tinyfn.layers.precision import Float32
from tinyfn.layers.reshape import Flatten, Reshape

__all__ = ["to_spec", "from_spec", "register_layer", "LAYERS"]

# name -> (constructor, takes_children): leaves are built as constructor(**config), combinators as
# constructor(*children, **config)
LAYERS: dict[str, tuple[Callable[..., Layer], bool]] = {
    "Linear": (Linear, False),
    "Conv2D": (Conv2D, False),
    "Deconv2D": (Deconv2D, False),
    "MaxPool2D": (MaxPool2D, False),
    "AvgPool2D": (AvgPool2D, False),
    "GlobalAvgPool2D": (GlobalAvgPool2D, False),
    "ReLU": (ReLU, False),
    "Softmax": (Softmax, False),
    "LogSoftmax": (LogSoftmax, False),
    "Flatten": (Flatten, False),
    "Reshape": (Reshape, False),
    "Dropout": (Dropout, False),
    "Float32": (Float32, False),
    "BatchNorm1D": (BatchNorm1D, False),
    "BatchNorm2D": (BatchNorm2D, False),
    "LayerNorm": (LayerNorm, False),
    "Identity": (Identity, False),
    "FanOut": (FanOut, False),
    "Add": (Add, False),
    "Concat": (Concat, False),
    "serial": (serial, True),
    "branch": (branch, True),
    "parallel": (parallel, True),
    "residual": (residual, True),
}

# Names saved by tinyfn before the layers took stax's casing: a spec (or checkpoint) holding them still loads.
RENAMED = {"add": "Add", "concat": "Concat", "identity": "Identity", "fan_out": "FanOut"}


def register_layer(name: str, constructor: Callable[..., Layer], *, takes_children: bool = False) -> None:
    """Teach ``from_spec`` a layer: ``constructor(**config)`` (or ``constructor(*children, **config)``) rebuilds it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_layer: name must be a non-empty string, got {name!r}")
    if not callable(constructor):
        raise TypeError(f"register_layer: constructor must be callable, got {type(constructor).__name__}")
    LAYERS[name] = (constructor, bool(takes_children))


def _encode(value, where, key):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_encode(v, where, key) for v in value]
    if isinstance(value, (np.dtype, type)) or hasattr(value, "dtype") and not hasattr(value, "shape"):
        try:
            return {"dtype": np.dtype(value).name}
        except TypeError:
            pass
    raise TypeError(f"to_spec: {where} has config {key}={value!r} ({type(value).__name__}), which JSON cannot record")


def _decode(value):
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if isinstance(value, dict) and set(value) == {"dtype"}:
        import jax.numpy as jnp

        return jnp.dtype(value["dtype"])
    return value


def to_spec(model: Layer, *, _where: str = "model") -> dict[str, Any]:
    """The JSON-ready architecture of ``model``; raises naming any layer ``from_spec`` could not rebuild."""
    if not isinstance(model, Layer):
        raise TypeError(f"to_spec: {_where} must be a Layer, got {type(model).__name__}")
    if model.name not in LAYERS:
        raise ValueError(
            f"to_spec: {_where} is a layer named {model.name!r} that tinyfn cannot rebuild; "
            f"register its constructor with tinyfn.layers.register_layer({model.name!r}, ...)"
        )
    spec: dict[str, Any] = {
        "name": model.name,
        "config": {k: _encode(v, f"{_where} ({model.name})", k) for k, v in model.config.items()},
    }
    if model.label is not None:
        spec["label"] = model.label
    if model.children:
        spec["children"] = [to_spec(c, _where=f"{_where}.children[{i}]") for i, c in enumerate(model.children)]
    json.dumps(spec)  # every value is JSON by construction; this fails loudly if not
    return spec


def from_spec(spec, *, _where: str = "spec") -> Layer:
    """Rebuild a model from ``to_spec``'s output (a dict, or its JSON text)."""
    if isinstance(spec, str):
        spec = json.loads(spec)
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"from_spec: {_where} must be a dict with a 'name', got {spec!r}")
    name = spec["name"]
    if name not in LAYERS and name in RENAMED:
        name = RENAMED[name]
    if name not in LAYERS:
        raise ValueError(
            f"from_spec: unknown layer {name!r} at {_where}; known layers: {sorted(LAYERS)} "
            f"(register others with tinyfn.layers.register_layer)"
        )
    constructor, takes_children = LAYERS[name]
    config = {k: _decode(v) for k, v in spec.get("config", {}).items()}
    children = [from_spec(c, _where=f"{_where}.children[{i}]") for i, c in enumerate(spec.get("children", []))]
    if children and not takes_children:
        raise ValueError(f"from_spec: {_where} ({name}) has children but {name} takes none")
    try:
        layer = constructor(*children, **config) if takes_children else constructor(**config)
    except TypeError as exc:
        raise ValueError(f"from_spec: {_where} ({name}) could not be built from config {config}: {exc}") from None
    return layer if spec.get("label") is None else Named(spec["label"], layer)
