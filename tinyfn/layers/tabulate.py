"""``summary(model, input_shape)``: a table of a model's layers, output shapes and parameter counts.

As Flax's ``tabulate`` or torchinfo's ``summary``: one row per layer, named as ``tinyfn.layers.layer_names`` names
it (``conv1``, ``block2.conv1``: the names checkpoints, ``params_at`` and ``visualize --layer`` take), its kind with
the constructor arguments that differ from their defaults, then the totals. ``State`` counts the entries of
non-trained state (batch norm's running statistics). The table fits in ``width`` columns (100): long layer
descriptions are cut with ``...``.
"""

from __future__ import annotations

import inspect

import jax
import numpy as np

from tinyfn.layers.base import Layer, init_with_state
from tinyfn.layers.name_scopes import children_of as _children
from tinyfn.layers.names import layer_names

__all__ = ["summary"]


def _count(tree) -> int:
    return int(sum(np.prod(np.shape(a), dtype=np.int64) for a in jax.tree_util.tree_leaves(tree)))


def _value(v) -> str:
    if isinstance(v, tuple) and v and all(x == v[0] for x in v) and not isinstance(v[0], tuple):
        v = v[0]  # (3, 3) -> 3
    return repr(v)


def _label(layer: Layer) -> str:
    """``Conv2D(out_channels=6, kernel_size=5, padding=2)``: the arguments that differ from their defaults."""
    from tinyfn.layers.spec import LAYERS  # spec imports every layer; this module sits below it

    try:
        params = inspect.signature(LAYERS[layer.name][0]).parameters if layer.name in LAYERS else {}
    except (TypeError, ValueError):
        params = {}
    args = []
    for k, v in layer.config.items():
        default = params[k].default if k in params else inspect.Parameter.empty
        if default is inspect.Parameter.empty or _value(default) != _value(v):
            args.append(f"{k}={_value(v)}")
    first = next(iter(layer.config.items()), None)
    if args and first is not None and not args[0].startswith(f"{first[0]}="):  # with the others, the first too
        args.insert(0, f"{first[0]}={_value(first[1])}")
    return f"{layer.name}({', '.join(args)})" if args else layer.name


def _cut(text: str, width: int) -> str:
    """``text`` within ``width``: whole arguments dropped from the end, ``...`` in their place."""
    while len(text) > width and ", " in text:
        text = text[: text.rindex(", ")] + ", ...)"
        if len(text) > width:
            text = text[: text.rindex(", ...)")]
    return text if len(text) <= width else text[: width - 3] + "..."


def _shapes(layer, shape, key, path, out) -> tuple:
    """Record ``(output shape, params, state entries)`` of ``layer`` and of every layer below it under its path."""
    shape_out, params, state = init_with_state(layer, key, shape)
    out[path] = (shape_out, _count(params), _count(state))
    if layer.name == "serial":
        s = shape
        for child, p in _children(layer, path):
            s = _shapes(child, s, key, p, out)
    elif layer.name in ("branch", "residual"):
        for child, p in _children(layer, path):
            _shapes(child, shape, key, p, out)
    elif layer.name == "parallel":
        for (child, p), s in zip(_children(layer, path), shape):
            _shapes(child, s, key, p, out)
    return shape_out


def _shape_text(shape) -> str:
    if shape and isinstance(shape[0], (tuple, list)):
        return "(" + ", ".join(_shape_text(s) for s in shape) + ")"
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _fit(rows, width: int) -> list[str]:
    """The rows as lines of at most ``width`` columns where the fixed columns allow: column 1 is cut to fit."""
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    room = width - sum(widths) + widths[1] - 2 * 4
    if widths[1] > room:
        widths[1] = max(room, 12)
        rows = [(r[0], _cut(r[1], widths[1]), *r[2:]) for r in rows]
    w = widths
    return [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}  {r[4]:>{w[4]}}".rstrip() for r in rows]


def summary(model: Layer, input_shape, *, width: int = 100) -> str:
    """The table as text (``print(tinyfn.summary(model, (None, 1, 28, 28)))``).

    Parameter counts include a combinator's children (its row is the total of
    what it holds). The batch entry ``None`` shows as ``N``. For
    ``serial(Conv2D(2, 3), Flatten(), Linear(3))`` on ``(None, 1, 4, 4)``::

        Name      Layer                                  Output shape  Params  State
        (model)   serial                                 (N, 3)            47      0
        conv1     Conv2D(out_channels=2, kernel_size=3)  (N, 2, 2, 2)      20      0
        flatten1  Flatten                                (N, 8)             0      0
        linear1   Linear(out_features=3)                 (N, 3)            27      0
        Total params: 47   State entries: 0
    """
    if not isinstance(model, Layer):
        raise TypeError(f"summary: model must be a Layer, got {type(model).__name__}")
    found: dict = {}
    _shapes(model, tuple(input_shape), jax.random.key(0), (), found)
    entries = [("(model)", (), model)] + [(n.name, n.path, n.layer) for n in layer_names(model)]
    rows = [("Name", "Layer", "Output shape", "Params", "State")]
    for name, path, layer in entries:
        if path in found:
            out, p, s = found[path]
            rows.append((name, _label(layer), _shape_text(out), f"{p:,}", f"{s:,}"))
    lines = _fit(rows, width)
    lines.append(f"Total params: {found[()][1]:,}   State entries: {found[()][2]:,}")
    return "\n".join(lines)
