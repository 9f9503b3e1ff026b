"""The layer contract, its one constructor ``make_layer``, and the ``serial`` combinator.

A layer is a pair of pure functions::

    init(key, input_shape) -> (output_shape, params)
    apply(params, x, *, key=None, train=False) -> y

``input_shape`` includes the batch dimension, which may be ``None`` (any batch size) or an int; ``init`` computes
``output_shape`` without running the layer (``tinyfn._checks.input_shape`` is the one check of an input shape).
``params`` is a plain pytree: a dict such as ``{"w": ..., "b": ...}`` for one layer, ``{}`` for a layer without
parameters, a tuple of the children's params for ``serial``. ``key`` feeds the layers that draw random numbers at
apply time (dropout) and ``train`` switches them between training and evaluation.

**The contract, held by construction.** Every layer is built by ``make_layer`` (combinators by ``make_combinator``,
which calls it), and ``make_layer`` wraps the ``apply`` it is given: before the layer computes, ``params`` (and
``state``, for a stateful layer) are checked against what ``init`` makes for the input's shape: the keys (a misspelt
one is named: ``lacks 'gamma' and has unexpected 'gama'``), missing and extra entries, shapes and kinds of dtype,
naming the layer and the entry. What ``init`` makes is computed once per input shape (``jax.eval_shape``, nothing
drawn) and cached, so eagerly the check is a lookup and a walk over the tree; under ``jit`` it runs once, at trace
time. If ``init`` refuses the input's shape, nothing is checked here and the op reports the input. No layer can forget
the check: ``Layer(...)`` is called here only.

A ``Layer`` also carries its kind (``name``), constructor arguments (``config``), a combinator's ``children`` and
a user's ``label``, from which ``tinyfn.layers.names`` names every layer (errors too: ``(linear1: layer 7, Linear)``).

State (batch norm's running statistics) is a second pytree, threaded beside params the way Haiku's
``transform_with_state`` does it. A stateful layer fills two more fields::

    init_with_state(key, input_shape) -> (output_shape, params, state)
    apply_with_state(params, state, x, *, key=None, train=False) -> (y, new_state)

and its plain ``init`` still returns ``(output_shape, params)`` while its plain ``apply`` raises, naming the functions
to use. Stateless layers leave both fields ``None``: their signatures, and a ``serial`` of them, are exactly as above.
The module functions ``init_with_state``/``apply_with_state`` accept every layer (a stateless one has state ``{}``),
so training code treats all models alike; ``has_state(layer)`` tells them apart. A combinator is written once, in its
stateful form (``make_combinator``); when no child has state its stateless ``init``/``apply`` are derived from that
form (Haiku's ``without_state(transform_with_state(f))``), else it is stateful and its state mirrors its params (the
tuple of the children's states for ``serial``).

Why a separate pytree, and not state inside params or a mutable object: gradients are taken with respect to params
only and optimizers never see the statistics; ``apply_with_state`` stays a pure function that ``jit``, ``grad``
(``has_aux``) and sharding handle like any other; and the state saves and restores like params, so training resumes
bit-identically.
"""

from __future__ import annotations

import operator
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import jax

from tinyfn import _checks
from tinyfn.layers.name_scopes import check_names, named_where


class Layer(NamedTuple):
    init: Callable[..., tuple[tuple, Any]]
    apply: Callable[..., Any]
    name: str = "Layer"
    config: Mapping[str, Any] = MappingProxyType({})
    children: tuple[Layer, ...] = ()
    init_with_state: Callable[..., tuple[tuple, Any, Any]] | None = None  # stateful layers only
    apply_with_state: Callable[..., tuple[Any, Any]] | None = None  # stateful layers only
    label: str | None = None  # a name the user gave (``tinyfn.layers.Named``); see ``tinyfn.layers.names``

    def __repr__(self) -> str:
        named = lambda text: text if self.label is None else f"Named({self.label!r}, {text})"  # noqa: E731
        if self.children:
            inner = ",\n".join("  " + repr(c).replace("\n", "\n  ") for c in self.children)
            return named(f"{self.name}(\n{inner}\n)")
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return named(f"{self.name}({args})")


def has_state(layer: Layer) -> bool:
    """Whether ``layer`` (or a child) carries state besides its params."""
    return layer.apply_with_state is not None


def init_with_state(layer: Layer, key, input_shape) -> tuple[tuple, Any, Any]:
    """``(output_shape, params, state)`` for any layer; a stateless layer's state is ``{}``."""
    if layer.init_with_state is not None:
        out = layer.init_with_state(key, input_shape)
        _seed(layer.init_with_state, input_shape, out[1:])
        return out
    shape, params = layer.init(key, input_shape)
    _seed(layer.init, input_shape, (params,))
    return shape, params, {}


def apply_with_state(layer: Layer, params, state, x, *, key=None, train=False):
    """``(y, new_state)`` for any layer; a stateless layer returns ``state`` unchanged."""
    if layer.apply_with_state is not None:
        return layer.apply_with_state(params, state, x, key=key, train=train)
    return layer.apply(params, x, key=key, train=train), state


# ----------------------------------------------------------------------------- the check


_EXPECTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # init -> {input shape: expected trees}
_TRACING = [0]  # > 0 while ``_expected`` traces an init: the children's results are recorded too (``_seed``)


def _expected(init: Callable, input_shape) -> tuple | None:
    """What ``init`` makes for ``input_shape`` after the output shape, ``(params,)`` or ``(params, state)``,
    as ``ShapeDtypeStruct``s (nothing drawn); ``None`` if ``init`` refuses the shape. Cached per init and shape."""
    per_shape = _EXPECTED.setdefault(init, {})
    if input_shape not in per_shape:
        _TRACING[0] += 1
        try:
            per_shape[input_shape] = jax.eval_shape(lambda: tuple(init(jax.random.key(0), input_shape)[1:]))
        except Exception:  # noqa: BLE001 - init refuses this input: the op's own checks will say why
            per_shape[input_shape] = None
        finally:
            _TRACING[0] -= 1
    return per_shape[input_shape]


def _seed(init: Callable, input_shape, trees) -> None:
    """While a combinator's init is traced for the check, record what each child's init made for its input
    shape, so that the children's own checks find it cached (one trace of the model's init, not one per level)."""
    if not _TRACING[0]:
        return
    try:
        key = _shape_key(input_shape)
        value = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tuple(trees))
    except (TypeError, AttributeError):  # a batch entry of None, or a leaf that is no array: nothing to record
        return
    _EXPECTED.setdefault(init, {}).setdefault(key, value)


def _shape_key(shape):
    """``shape`` (or a tuple of shapes) as the nested tuple of ints ``_checks.shape_tree`` gives for an input."""
    if isinstance(shape, (tuple, list)):
        return tuple(_shape_key(d) for d in shape)
    return operator.index(shape)


def _check(name: str, init: Callable, x, where, **trees) -> None:
    """Each of ``trees`` (``params=``, and ``state=`` for ``init_with_state``) against what ``init`` makes for ``x``."""
    try:
        shape = _checks.shape_tree(x)
    except (TypeError, ValueError):  # not an array: the op reports it
        return
    expected = _expected(init, shape)
    if expected is None:
        return
    for (what, tree), want in zip(trees.items(), expected):
        _checks.params_match(tree, want, path=what, op=name, where=where)


def _stateful_apply_error(name: str) -> Callable:
    """The plain ``apply`` of a stateful layer: it raises, naming what to call instead."""

    def apply(params, x, *, key=None, train=False):
        raise TypeError(
            f"{name}: this layer carries state (running statistics); use "
            f"tinyfn.layers.init_with_state(model, key, shape) and "
            f"tinyfn.layers.apply_with_state(model, params, state, x, key=..., train=...) -> (y, new_state)"
        )

    return apply


# ----------------------------------------------------------------------------- building layers


def make_layer(
    name: str,
    init: Callable | None = None,
    apply: Callable | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    init_with_state: Callable | None = None,
    apply_with_state: Callable | None = None,
    children: Sequence[Layer] = (),
    where: Callable[[str], str] | None = None,
) -> Layer:
    """The one way to build a layer: the ``apply`` given is wrapped in the params (and state) check.

    A stateless layer: ``make_layer(name, init, apply, config=...)`` with ``init(key, input_shape) -> (output_shape,
    params)`` and ``apply(params, x, *, key, train) -> y``. A stateful layer: ``make_layer(name, init_with_state=...,
    apply_with_state=..., config=...)`` (signatures in the module docstring); its plain ``init`` drops the state (or
    is ``init``, if given) and its plain ``apply`` raises, naming the functions to use. ``config`` holds the
    constructor's arguments (what ``to_spec`` records), ``children`` a combinator's layers, and ``where(path)`` may
    return a note naming the child that owns a wrong entry.

    For example, a layer that scales its input by a learnt scalar::

        def Scale():
            init = lambda key, input_shape: (tuple(input_shape), {"s": jnp.ones(())})
            return make_layer("Scale", init, lambda params, x, *, key=None, train=False: params["s"] * x)
    """
    return _build(name, init, apply, config, init_with_state, apply_with_state, tuple(children), where, None)


def _build(name, init, apply, config, init_s, apply_s, children, where, precheck) -> Layer:
    """``make_layer``, with an optional ``precheck(what, tree)`` run first (a combinator's container)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"make_layer: name must be a non-empty string, got {name!r}")
    config = MappingProxyType(dict(config or {}))
    if (init_s is None) != (apply_s is None):
        raise TypeError(f"make_layer: {name}: give both init_with_state and apply_with_state, or neither")
    if init_s is None:
        if not callable(init) or not callable(apply):
            raise TypeError(f"make_layer: {name}: init and apply must be callables, got {init!r} and {apply!r}")

        def checked_apply(params, x, *, key=None, train=False):
            if precheck is not None:
                precheck("params", params)
            _check(name, init, x, where, params=params)
            return apply(params, x, key=key, train=train)

        if where is not None:
            _OWNERS[checked_apply] = where
        return Layer(init, checked_apply, name, config, children)

    if apply is not None:
        raise TypeError(f"make_layer: {name}: a stateful layer's plain apply raises; give apply_with_state only")

    def checked_apply_with_state(params, state, x, *, key=None, train=False):
        if precheck is not None:
            precheck("params", params)
            precheck("state", state)
        _check(name, init_s, x, where, params=params, state=state)
        return apply_s(params, state, x, key=key, train=train)

    if where is not None:
        _OWNERS[checked_apply_with_state] = where
    if init is None:

        def init(key, input_shape):
            shape, params, _ = init_s(key, input_shape)
            return shape, params

    return Layer(init, _stateful_apply_error(name), name, config, children, init_s, checked_apply_with_state)


def parameterless(name: str, fn: Callable, shape_fn: Callable | None = None, **config) -> Layer:
    """A layer without parameters applying ``fn(x)``; ``shape_fn`` maps (checked) shapes, identity by default."""

    def init(key, input_shape):
        shape = _checks.input_shape(input_shape, op=name)
        return (shape_fn(shape) if shape_fn else shape), {}

    def apply(params, x, *, key=None, train=False):
        return fn(x)

    return make_layer(name, init, apply, config=config)


def split_keys(key, n: int) -> list:
    """``n`` keys for ``n`` children (``key`` split once), or ``n`` ``None``s without a key."""
    return list(jax.random.split(key, n)) if key is not None and n else [None] * n


def make_combinator(
    name: str,
    layers: Sequence[Layer],
    init_with_state: Callable,
    apply_with_state: Callable,
    *,
    keys: tuple[str, ...] | None = None,
    config: Mapping[str, Any] | None = None,
    children: Sequence[Layer] | None = None,
) -> Layer:
    """A layer over ``layers``, written once in its stateful form; the stateless form is derived.

    ``init_with_state(key, input_shape) -> (output_shape, params_per_layer, states_per_layer)`` and
    ``apply_with_state(params_per_layer, states_per_layer, x, *, key, train) -> (y, states_per_layer)`` see one entry
    per layer, in order (use the module functions ``init_with_state``/``apply_with_state`` on the children: a
    stateless child's state is ``{}``). The combinator's params and state are the tuple of those entries, or with
    ``keys`` the dict ``{keys[i]: entry i}``. When no layer has state, the layer is stateless: ``init`` drops the
    state, ``apply`` runs the stateful form with ``{}`` for every child, and ``init_with_state``/``apply_with_state``
    are ``None``. Either way the apply is checked (``make_layer``), the container first (``serial: params must be a
    tuple with one entry per layer (2), ...``), and a wrong entry is named with its layer (``params[7]['w'] (layer 7,
    Linear)``). ``children`` (default ``layers``) is what the ``Layer`` records for specs and ``repr``.
    """
    layers = _layers(name, layers)
    n = len(layers)
    pack = (lambda entries: tuple(entries)) if keys is None else (lambda entries: dict(zip(keys, entries)))
    unpack = (lambda tree: tuple(tree)) if keys is None else (lambda tree: tuple(tree[k] for k in keys))
    precheck = _container_check(name, n, keys)

    def init_s(key, input_shape):
        shape, params, states = init_with_state(key, input_shape)
        return shape, pack(params), pack(states)

    def apply_s(params, state, x, *, key=None, train=False):
        y, states = apply_with_state(unpack(params), unpack(state), x, key=key, train=train)
        return y, pack(states)

    children = layers if children is None else tuple(children)
    where = named_where(name, children, _owner(layers, keys))
    check_names(name, children)
    if any(has_state(layer) for layer in layers):
        return _build(name, None, None, config, init_s, apply_s, children, where, precheck)

    def init(key, input_shape):
        shape, params, _ = init_with_state(key, input_shape)
        return shape, pack(params)

    def apply(params, x, *, key=None, train=False):
        return apply_with_state(unpack(params), ({},) * n, x, key=key, train=train)[0]

    return _build(name, init, apply, config, None, None, children, where, precheck)


def _layers(name: str, layers) -> tuple[Layer, ...]:
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"{name}: argument {i} must be a Layer (an init/apply pair), got {type(layer).__name__}")
    return tuple(layers)


def _container_check(name: str, n: int, keys) -> Callable:
    """``precheck(what, tree)``: ``tree`` is a tuple of ``n`` entries (or a dict with ``keys``), else a clear error."""

    def precheck(what, tree):
        if keys is None and not (isinstance(tree, (tuple, list)) and len(tree) == n):
            got = f"a {type(tree).__name__} of length {len(tree)}" if hasattr(tree, "__len__") else repr(tree)
            raise ValueError(f"{name}: {what} must be a tuple with one entry per layer ({n}), got {got}")
        if keys is not None and not (isinstance(tree, Mapping) and set(tree) == set(keys)):
            got = f"a dict with keys {sorted(tree)}" if isinstance(tree, Mapping) else type(tree).__name__
            want = " and ".join(repr(k) for k in keys)
            raise ValueError(f"{name}: {what} must be a dict with keys {want}, got {got}")

    return precheck


_OWNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a combinator's checked apply -> its where


def _owner(layers: tuple[Layer, ...], keys) -> Callable[[str], str]:
    """``where(path)``: for ``params[3]...`` the note ``layer 3, Conv2D``, for ``state['body']...`` ``body, serial``,
    followed down the tree (``layer 0, branch > layer 1, Conv2D``) to the layer that owns the entry."""

    def where(path: str) -> str:
        m = re.match(r"^(params|state)\[(\d+|'[^']*')\]", path)
        if m is None:
            return ""
        root, entry = m.group(1), m.group(2)
        if keys is None:
            i = int(entry)
            if i >= len(layers):
                return ""
            note = f"layer {i}, {layers[i].name}"
        else:
            key = entry.strip("'")
            if key not in keys:
                return ""
            i = keys.index(key)
            note = f"{key}, {layers[i].name}"
        inner = _OWNERS.get(layers[i].apply_with_state or layers[i].apply)
        inner = getattr(inner, "positional", inner)
        deeper = inner(root + path[m.end() :]) if inner is not None else ""
        return f"{note} > {deeper}" if deeper else note

    return where


def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence; params (and state) are the tuple of the children's.

    ``init`` threads the shape through the children and gives each its own key (split once); ``apply`` splits ``key``
    the same way when one is given.

    >>> from tinyfn.layers import Conv2D, ReLU, Flatten, Linear, serial
    >>> model = serial(Conv2D(4, 3), ReLU(), Flatten(), Linear(10))
    >>> shape, params = model.init(jax.random.key(0), (None, 1, 8, 8))
    >>> shape, [jax.tree_util.tree_map(lambda a: a.shape, p) for p in params]
    ((None, 10), [{'b': (4,), 'w': (4, 1, 3, 3)}, {}, {}, {'b': (10,), 'w': (144, 10)}])
    """
    layers = _layers("serial", layers)

    def init(key, input_shape):
        if not isinstance(input_shape, (tuple, list)):
            raise TypeError(f"serial: input_shape must be a tuple of ints (or of shapes), got {input_shape!r}")
        shape, params, states = tuple(input_shape), [], []
        for layer, k in zip(layers, split_keys(key, len(layers))):
            shape, p, s = init_with_state(layer, k, shape)
            params.append(p)
            states.append(s)
        return shape, params, states

    def apply(params, state, x, *, key=None, train=False):
        new_state = []
        for layer, p, s, k in zip(layers, params, state, split_keys(key, len(layers))):
            x, s = apply_with_state(layer, p, s, x, key=k, train=train)
            new_state.append(s)
        return x, new_state

    return make_combinator("serial", layers, init, apply)
