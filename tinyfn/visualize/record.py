"""Name a model's layers and record one forward pass: every layer's input, output and max-pool switches.

The table walks into ``serial`` combinators; any other combinator (a residual
block, a branch) is one entry of the table, run whole. A stateful model (batch
norm) is recorded in evaluation mode with its ``model_state`` (the running
statistics), which mirrors the params' structure.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from tinyfn.layers import SHORT, Layer, apply_with_state, has_state, layer_names, max_pool2d_with_switches

__all__ = ["LayerInfo", "Recording", "layer_table", "resolve_layer", "record", "check_state"]


class LayerInfo(NamedTuple):
    """One entry of a (possibly nested) ``serial`` model: a leaf layer, or a combinator other than ``serial``."""

    index: int  # position in the flat list of leaf layers
    name: str  # the layer's name (tinyfn.layers.layer_names), e.g. "conv2", "pool1", "block2.residual1"
    layer: Layer
    path: tuple[int, ...]  # where its params sit in the params pytree

    def params(self, params):
        for i in self.path:
            params = params[i]
        return params

    def state(self, model_state):
        """This layer's part of the model's state (``{}`` for a stateless model)."""
        if not model_state and not has_state(self.layer):
            return {}
        for i in self.path:
            model_state = model_state[i]
        return model_state


def layer_table(model: Layer) -> list[LayerInfo]:
    """The leaf layers of ``model`` in forward order, named as ``tinyfn.layers.layer_names`` names them: ``conv1,
    relu1, pool1, conv2, ...``; a residual block in a nested ``serial`` is ``block1.residual1``."""
    leaves: list[tuple[Layer, tuple[int, ...]]] = []

    def walk(layer, path):
        if layer.name == "serial":
            for i, child in enumerate(layer.children):
                walk(child, path + (i,))
        else:  # a leaf, or a combinator run as one entry
            leaves.append((layer, path))

    if not isinstance(model, Layer):
        raise TypeError(f"model must be a tinyfn Layer (a serial of layers), got {type(model).__name__}")
    walk(model, ())
    names = {n.path: n.name for n in layer_names(model)}
    own = model.label or f"{SHORT.get(model.name, model.name.lower())}1"  # a model that is one layer
    return [LayerInfo(index, names.get(path, own), layer, path) for index, (layer, path) in enumerate(leaves)]


def resolve_layer(model: Layer, layer) -> LayerInfo:
    """A layer by name (``"conv2"``) or flat index (``3``, ``"3"`` or negative), with a clear error otherwise."""
    table = layer_table(model)
    names = [t.name for t in table]
    if isinstance(layer, str) and layer.lstrip("-").isdigit():
        layer = int(layer)
    if isinstance(layer, int) and not isinstance(layer, bool):
        if -len(table) <= layer < len(table):
            return table[layer]
        raise ValueError(f"layer index {layer} is out of range: the model has {len(table)} layers ({', '.join(names)})")
    if isinstance(layer, str):
        for t in table:
            if t.name == layer:
                return t
        raise ValueError(
            f"layer {layer!r} does not exist; expected one of {', '.join(names)} or an index below {len(table)}"
        )
    raise TypeError(f"layer must be a name or an int index, got {layer!r}")


class Recording(NamedTuple):
    """What one forward pass left behind, per leaf layer (``None`` where not applicable)."""

    layers: tuple[LayerInfo, ...]
    inputs: tuple[Any, ...]  # the input of each layer
    outputs: tuple[Any, ...]  # the output of each layer
    switches: tuple[Any, ...]  # int32 max-pool switches for MaxPool2D layers, else None

    def output(self, layer) -> Any:
        return self.outputs[self._index(layer)]

    def _index(self, layer) -> int:
        if isinstance(layer, LayerInfo):
            return layer.index
        names = [t.name for t in self.layers]
        return names.index(layer) if isinstance(layer, str) else int(layer)


def check_state(model: Layer, model_state, *, op: str = "record"):
    """``model_state``, or ``{}`` for a stateless model; a stateful one without its state is refused."""
    if model_state is None:
        if has_state(model):
            raise ValueError(
                f"{op}: the model carries state (batch norm's running statistics); pass model_state= (e.g. "
                "load_model(...).model_state)"
            )
        return {}
    return model_state


def record(model: Layer, params, x, *, upto=None, model_state=None) -> Recording:
    """Run ``model`` in evaluation mode on ``x``, recording every layer's input, output and switches.

    Max-pooling layers run as ``max_pool2d_with_switches`` so their switches can
    later route a signal back with ``max_unpool2d``. ``upto`` (a name or index)
    stops after that layer. A stateful model needs its ``model_state``.
    """
    model_state = check_state(model, model_state)
    table = layer_table(model)
    stop = resolve_layer(model, upto).index if upto is not None else len(table) - 1
    x = jnp.asarray(x)
    inputs, outputs, switches = [], [], []
    for info in table[: stop + 1]:
        inputs.append(x)
        if info.layer.name == "MaxPool2D":
            cfg = info.layer.config
            x, sw = max_pool2d_with_switches(x, cfg["window"], stride=cfg["stride"], padding=cfg["padding"])
        else:
            x, sw = apply_with_state(info.layer, info.params(params), info.state(model_state), x, train=False)[0], None
        outputs.append(x)
        switches.append(sw)
    return Recording(tuple(table[: stop + 1]), tuple(inputs), tuple(outputs), tuple(switches))
