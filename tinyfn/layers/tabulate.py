"""``summary(model, input_shape)``: a table of a model's layers, output shapes and parameter counts.

As Flax's ``tabulate`` or torchinfo's ``summary``: one row per layer, nested
layers indented under their combinator, then the totals. ``State`` counts the
entries of non-trained state (batch norm's running statistics).
"""

from __future__ import annotations

import jax
import numpy as np

from tinyfn.layers.base import Layer, init_with_state

__all__ = ["summary"]


def _count(tree) -> int:
    return int(sum(np.prod(np.shape(a), dtype=np.int64) for a in jax.tree_util.tree_leaves(tree)))


def _label(layer: Layer) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in layer.config.items())
    return f"{layer.name}({args})" if args else layer.name


def _rows(layer, shape, depth, key, rows):
    out, params, state = init_with_state(layer, key, shape)
    rows.append(("  " * depth + _label(layer), out, _count(params), _count(state)))
    children = layer.children
    if layer.name == "serial":
        s = shape
        for child in children:
            s = _rows(child, s, depth + 1, key, rows)
    elif layer.name in ("branch", "residual"):
        for child in children:
            _rows(child, shape, depth + 1, key, rows)
    elif layer.name == "parallel":
        for child, s in zip(children, shape):
            _rows(child, s, depth + 1, key, rows)
    return out


def _shape_text(shape) -> str:
    if shape and isinstance(shape[0], (tuple, list)):
        return "(" + ", ".join(_shape_text(s) for s in shape) + ")"
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def summary(model: Layer, input_shape) -> str:
    """The table as text (``print(tinyfn.summary(model, (None, 1, 28, 28)))``).

    Parameter counts include a combinator's children (its row is the total of
    what it holds). The batch entry ``None`` shows as ``N``.

    For ``serial(Conv2D(2, 3), Flatten(), Linear(3))`` on ``(None, 1, 4, 4)``::

        Layer                                       Output shape  Params  State
        serial                                      (N, 3)            47      0
          Conv2D(out_channels=2, kernel_size=(3, 3), ...)  (N, 2, 2, 2)  20  0
          Flatten                                   (N, 8)             0      0
          Linear(out_features=3, use_bias=True)     (N, 3)            27      0
        Total params: 47   State entries: 0
    """
    if not isinstance(model, Layer):
        raise TypeError(f"summary: model must be a Layer, got {type(model).__name__}")
    rows: list = []
    _rows(model, tuple(input_shape), 0, jax.random.key(0), rows)
    header = ("Layer", "Output shape", "Params", "State")
    table = [(name, _shape_text(out), f"{p:,}", f"{s:,}") for name, out, p, s in rows]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(4)]
    fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"  # noqa: E731
    lines = [fmt(header), *(fmt(r) for r in table)]
    lines.append(f"Total params: {rows[0][2]:,}   State entries: {rows[0][3]:,}")
    return "\n".join(lines)
