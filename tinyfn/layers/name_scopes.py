"""How a layer tree is named, below the ``Layer`` class: ``scope_names(kind, children)`` (read by
``tinyfn.layers.names``, whose docstring states the rules), and the checks ``base`` runs with it when a combinator
is built (``check_names``) and when a params entry is wrong (``named_where``).

It reads only a layer's ``name``, ``children`` and ``label``, so ``base`` imports it without a cycle.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

SHORT = {
    "Conv2D": "conv",
    "Deconv2D": "deconv",
    "MaxPool2D": "pool",
    "ReLU": "relu",
    "Linear": "linear",
    "Flatten": "flatten",
    "Dropout": "dropout",
    "Softmax": "softmax",
    "LogSoftmax": "logsoftmax",
    "BatchNorm2D": "bn",
    "BatchNorm1D": "bn",
    "LayerNorm": "ln",
    "AvgPool2D": "avgpool",
    "GlobalAvgPool2D": "gap",
    "PatchEmbedding": "patches",
    "TransformerBlock": "block",
    "MultiHeadAttention": "attn",
    "TakeToken": "token",
    "serial": "block",
    "branch": "branch",
    "parallel": "parallel",
    "residual": "residual",
}


class LayerName(NamedTuple):
    """One layer of a model: its dotted ``name``, its ``path`` into the params (and state) tree, the ``layer``."""

    name: str
    path: tuple
    layer: Any  # a tinyfn.layers.Layer


class _Node(NamedTuple):  # the layer a name is computed for: its kind and children are what counts
    name: str
    children: tuple
    label: Any = None


def children_of(layer, path: tuple) -> list[tuple[Any, tuple]]:
    """A combinator's children with their paths (``residual``: ``body``, ``shortcut``; others by position)."""
    if layer.name == "residual":
        return [(c, path + (k,)) for c, k in zip(layer.children, ("body", "shortcut"))]
    return [(c, path + (i,)) for i, c in enumerate(layer.children)]


def _expand(layer, path: tuple, role: str | None = None) -> list[tuple[Any, tuple, str, bool]]:
    """The entries ``(layer, path, short name, opens a scope)`` a child adds to its scope; a residual is inlined."""
    short = role or SHORT.get(layer.name, layer.name.lower())
    if layer.name != "residual" or role is not None:
        return [(layer, path, short, bool(layer.children))]
    entries = [(layer, path, short, False)]
    (body, body_path), *shortcut = children_of(layer, path)
    if body.name == "serial" and body.label is None:
        for c, p in children_of(body, body_path):
            entries += _expand(c, p)
    else:
        entries += _expand(body, body_path)
    for c, p in shortcut:
        entries += _expand(c, p, role="shortcut")
    return entries


def _entries(layer, path: tuple) -> list[tuple[Any, tuple, str, bool]]:
    """The entries of the scope ``layer`` opens: its children's (a residual's own: its body's and shortcut's)."""
    if layer.name == "residual":
        return _expand(layer._replace(label=None), path)[1:]
    return [e for c, p in children_of(layer, path) for e in _expand(c, p)]


def _scope(entries, prefix: str, out: list) -> None:
    counts: dict[str, int] = {}
    names = []
    for layer, _, short, _ in entries:
        if layer.label is None:
            counts[short] = counts.get(short, 0) + 1
        names.append(layer.label or f"{short}{counts.get(short, 0)}")
    owner: dict[str, Any] = {}
    for (layer, path, _, opens), name in zip(entries, names):
        if name in owner:
            where = f"in scope {prefix[:-1]!r}" if prefix else "at the top level"
            raise ValueError(
                f"layer names must be unique within a scope: {name!r} names both a {owner[name].name} and a "
                f"{layer.name} {where}; give one of them another name with Named(...)"
            )
        owner[name] = layer
        out.append(LayerName(prefix + name, path, layer))
        if opens:
            _scope(_entries(layer, path), prefix + name + ".", out)


def scope_names(kind: str, children) -> list[LayerName]:
    """The names of everything below a layer of kind ``kind`` with ``children`` (combinators before their
    children); ``ValueError`` if two share a name in a scope."""
    out: list[LayerName] = []
    _scope(_entries(_Node(kind, tuple(children)), ()), "", out)
    return out


def check_names(kind: str, children) -> None:
    """Refuse, when a combinator is built, user names (``Named``) that clash within a scope."""

    def labelled(layer):
        return layer.label is not None or any(labelled(c) for c in layer.children)

    if any(labelled(c) for c in children):
        try:
            scope_names(kind, children)
        except ValueError as exc:
            raise ValueError(f"{kind}: {exc}") from None


def named_where(kind: str, children, positional: Callable[[str], str]) -> Callable[[str], str]:
    """``where(path)`` with the dotted name of the layer that owns the entry first: ``linear1: layer 7, Linear``."""

    def where(path: str) -> str:
        note = positional(path)
        if not note:
            return note
        keys = tuple(int(k) if k.isdigit() else k.strip("'") for k in re.findall(r"\[(\d+|'[^']*')\]", path))
        try:
            table = scope_names(kind, children)
        except ValueError:  # names that clash: the positional note alone
            return note
        owners = [n.name for n in table if n.path == keys[: len(n.path)]]
        return f"{owners[-1]}: {note}" if owners else note

    where.positional = positional
    return where
