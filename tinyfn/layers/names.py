"""Every layer of a composed model has a stable, readable name, computed from the model: ``layer_names(model)``.

The params (and state) pytrees keep their structure (tuples from ``serial``, dicts from the leaves); a name is a
view of it, pairing a dotted name with the path into the tree::

    >>> [(n.name, n.path) for n in layer_names(serial(Conv2D(4, 3), ReLU(), Flatten(), Linear(10)))]
    [('conv1', (0,)), ('relu1', (1,)), ('flatten1', (2,)), ('linear1', (3,))]

**Default names.** A layer is named by its kind's short name (``SHORT``: ``conv``, ``bn``, ``relu``, ``pool``,
``linear``, ...; any other kind by its lowercase name) and its count among the layers of that short name in its
scope: ``conv1, bn1, relu1, conv2``. Inserting a layer of another kind renames nothing. A nested ``serial`` opens a
scope named ``block1, block2, ...``; ``branch`` and ``parallel`` open ``branch1, ...`` and ``parallel1, ...``. A
``residual`` adds no level: it is named ``residual1, ...`` (its whole sub-tree), its body's layers are named beside
it in the same scope, and a projection shortcut is ``shortcut1, ...`` (a scope if it is a ``serial``). So in
``tinyfn.models.resnet`` the second basic block's first convolution is ``block2.conv1`` and its projection's
convolution ``block2.shortcut1.conv1``.

**User names.** ``Named("stem", layer)`` gives a layer (a combinator too: its scope is then ``stem``; a residual
still adds no level) its own name, kept by ``to_spec``/``from_spec``. Names are unique within a scope: two layers
named alike, or a user name that is a default name there (``conv1``), are refused, naming both.

**Addressing.** ``named_params(model, params)`` is the flat ``{"block2.conv1.w": array}``; ``params_at(model,
params, "block2")`` the sub-tree of a layer; ``param_mask(model, params, include=("block1", "linear*"))`` a tree of
bools shaped like ``params`` (shell-style patterns matched against every dotted prefix of a leaf's name), for an
optimizer's ``mask=`` or for ``tinyfn.train.freeze``/``scale_where``.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import jax

from tinyfn.layers.base import Layer
from tinyfn.layers.name_scopes import SHORT as SHORT, LayerName as LayerName, scope_names

__all__ = ["SHORT", "LayerName", "Named", "layer_names", "leaf_names", "named_params", "params_at", "param_mask"]


def Named(name: str, layer: Layer) -> Layer:
    """``layer`` under the name ``name`` (``Named("stem", Conv2D(16, 3))``); params and behaviour are unchanged."""
    if not isinstance(layer, Layer):
        raise TypeError(f"Named: layer must be a Layer, got {type(layer).__name__}")
    if not isinstance(name, str) or not name or "." in name or name.isdigit():
        raise ValueError(f"Named: name must be a non-empty string without '.' and not all digits, got {name!r}")
    return layer._replace(label=name)


def layer_names(model: Layer) -> list[LayerName]:
    """Every layer below ``model`` (combinators before their children), with its dotted name and params path."""
    if not isinstance(model, Layer):
        raise TypeError(f"layer_names: model must be a Layer, got {type(model).__name__}")
    return scope_names(model.name, model.children)


def _key(entry):
    for attr in ("idx", "key", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def leaf_names(model: Layer, tree) -> list[str]:
    """The dotted name of each leaf of ``tree`` (params, or the state that mirrors them), in ``tree_leaves`` order:
    the deepest layer whose path leads to the leaf, then the rest of the path (``"block2.conv1.w"``)."""
    by_path = {n.path: n.name for n in layer_names(model)}
    names = []
    for key_path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        path = tuple(_key(e) for e in key_path)
        cut = next((i for i in range(len(path), 0, -1) if path[:i] in by_path), 0)
        names.append(".".join([by_path[path[:cut]]] * bool(cut) + [str(k) for k in path[cut:]]))
    return names


def named_params(model: Layer, params) -> dict[str, Any]:
    """``params`` as a flat dict ``{"block2.conv1.w": array, ...}`` keyed by layer name and entry."""
    return dict(zip(leaf_names(model, params), jax.tree_util.tree_leaves(params)))


def _find(model: Layer, name: str, op: str) -> LayerName:
    table = layer_names(model)
    for n in table:
        if n.name == name:
            return n
    shown = ", ".join(n.name for n in table[:40]) + (", ..." if len(table) > 40 else "")
    raise ValueError(f"{op}: the model has no layer named {name!r}; its layers are {shown}")


def params_at(model: Layer, params, name: str):
    """The sub-tree of ``params`` (or of the state) that the layer ``name`` holds (``params_at(m, p, "block2")``)."""
    sub = params
    for k in _find(model, name, "params_at").path:
        sub = sub[k]
    return sub


def _matches(name: str, pattern: str) -> bool:
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def param_mask(model: Layer, params, include=("*",), exclude=()) -> Any:
    """A tree of Python bools shaped like ``params``: ``True`` where a leaf's name (or a dotted prefix of it) matches
    a pattern of ``include`` and none of ``exclude`` (``fnmatch`` patterns: ``"block1"``, ``"linear*"``,
    ``"*.bn*"``). A pattern that matches no leaf is refused, naming it (a misspelt layer freezes nothing)."""
    include, exclude = (tuple([p] if isinstance(p, str) else p) for p in (include, exclude))
    names = leaf_names(model, params)
    for p in include + exclude:
        if not isinstance(p, str) or not any(_matches(n, p) for n in names):
            raise ValueError(
                f"param_mask: pattern {p!r} matches no parameter; names look like {', '.join(names[:6])}, ..."
            )
    flags = [any(_matches(n, p) for p in include) and not any(_matches(n, p) for p in exclude) for n in names]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), flags)
