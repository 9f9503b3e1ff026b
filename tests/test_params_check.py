"""Every layer kind refuses params (and state) that are not what its init makes, naming the layer and the entry.

The check is part of ``make_layer``, the one way to build a layer, so the table below is driven by the spec
registry ``LAYERS``: a kind missing from it fails ``test_every_registered_layer_kind_is_in_the_table``.
"""

import ast
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyfn.layers import (
    GELU,
    LAYERS,
    Add,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Concat,
    Conv1D,
    Conv2D,
    Deconv2D,
    Dropout,
    Embedding,
    FanOut,
    Flatten,
    Float32,
    GlobalAvgPool2D,
    GroupNorm,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MaxPool2D,
    MultiHeadAttention,
    PatchEmbedding,
    PositionEmbedding,
    ReLU,
    Reshape,
    Sigmoid,
    SiLU,
    Softmax,
    TakeToken,
    Tanh,
    TransformerBlock,
    Upsample,
    apply_with_state,
    branch,
    has_state,
    init_with_state,
    make_layer,
    parallel,
    residual,
    serial,
)
from tinyfn.models import lenet5

X4 = (2, 3, 6, 6)
V = (4, 5)  # (N, features)
T3 = (2, 5, 8)  # (N, tokens, features)


class Ids(tuple):
    """An input shape whose input is integer ids (``Embedding``), not floats."""


# kind -> [(build, input shape, the owner note a combinator adds, or None)]; combinators once over stateless
# children and once over a stateful one (BatchNorm1D: params and state), so the derived stateless form and the
# stateful form are both covered.
CASES = {
    "Linear": [(lambda: Linear(4), V, None)],
    "Conv2D": [(lambda: Conv2D(4, 3), X4, None)],
    "Deconv2D": [(lambda: Deconv2D(2, 3), X4, None)],
    "MaxPool2D": [(lambda: MaxPool2D(2), X4, None)],
    "AvgPool2D": [(lambda: AvgPool2D(2), X4, None)],
    "GlobalAvgPool2D": [(GlobalAvgPool2D, X4, None)],
    "ReLU": [(ReLU, X4, None)],
    "Softmax": [(Softmax, V, None)],
    "LogSoftmax": [(LogSoftmax, V, None)],
    "Flatten": [(Flatten, X4, None)],
    "LeakyReLU": [(LeakyReLU, V, None)],
    "Sigmoid": [(Sigmoid, V, None)],
    "Tanh": [(Tanh, V, None)],
    "SiLU": [(SiLU, V, None)],
    "GELU": [(GELU, V, None)],
    "Embedding": [(lambda: Embedding(7, 4), Ids((2, 5)), None)],
    "MultiHeadAttention": [(lambda: MultiHeadAttention(8, 2), T3, None)],
    "PatchEmbedding": [(lambda: PatchEmbedding(3, 8), X4, None)],
    "PositionEmbedding": [(PositionEmbedding, T3, None)],
    "TakeToken": [(TakeToken, T3, None)],
    "TransformerBlock": [(lambda: TransformerBlock(8, 2, mlp_ratio=2), T3, None)],
    "Dropout": [(lambda: Dropout(0.5), X4, None)],
    "Float32": [(Float32, X4, None)],
    "BatchNorm1D": [(BatchNorm1D, V, None)],
    "BatchNorm2D": [(BatchNorm2D, X4, None)],
    "LayerNorm": [(LayerNorm, V, None)],
    "Conv1D": [(lambda: Conv1D(4, 3, dilation=2), (2, 3, 8), None)],
    "GroupNorm": [(lambda: GroupNorm(3), X4, None)],
    "Reshape": [(lambda: Reshape((-1, 4)), X4, None)],
    "Upsample": [(lambda: Upsample(2), X4, None)],
    "Identity": [(Identity, V, None)],
    "FanOut": [(lambda: FanOut(2), V, None)],
    "Add": [(Add, (V, V), None)],
    "Concat": [(Concat, ((2, 3, 4, 4), (2, 2, 4, 4)), None)],
    "serial": [
        (lambda: serial(ReLU(), Linear(4)), V, "layer 1, Linear"),
        (lambda: serial(ReLU(), BatchNorm1D()), V, "layer 1, BatchNorm1D"),
    ],
    "branch": [
        (lambda: branch(ReLU(), Linear(4)), V, "layer 1, Linear"),
        (lambda: branch(ReLU(), BatchNorm1D()), V, "layer 1, BatchNorm1D"),
    ],
    "parallel": [
        (lambda: parallel(ReLU(), Linear(4)), (V, V), "layer 1, Linear"),
        (lambda: parallel(ReLU(), BatchNorm1D()), (V, V), "layer 1, BatchNorm1D"),
    ],
    "residual": [
        (lambda: residual(Linear(5)), V, "body, Linear"),
        (lambda: residual(BatchNorm1D()), V, "body, BatchNorm1D"),
    ],
}
SKIPPED: dict[str, str] = {}  # kind -> why it is not in CASES (none today)


def test_every_registered_layer_kind_is_in_the_table():
    assert set(LAYERS) == set(CASES) | set(SKIPPED), f"not covered: {sorted(set(LAYERS) - set(CASES) - set(SKIPPED))}"
    for kind, variants in CASES.items():
        assert all(build().name == kind for build, _, _ in variants)


def _x(shape):
    if isinstance(shape[0], tuple):
        return tuple(_x(s) for s in shape)
    if isinstance(shape, Ids):
        return jax.random.randint(jax.random.key(1), shape, 0, 7)
    return jax.random.normal(jax.random.key(1), shape) + 2


def _run(layer, params, state, x, *, jit):
    def f(p, s, x):
        if has_state(layer):
            return apply_with_state(layer, p, s, x)
        return layer.apply(p, x)

    return jax.jit(f).lower(params, state, x) if jit else f(params, state, x)


def _first_dict(tree, path=""):
    """The path (as the error writes it) and the entries of the first dict holding arrays in ``tree``."""
    if isinstance(tree, dict) and any(hasattr(v, "shape") for v in tree.values()):
        return path, tree
    children = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (tuple, list)) else ()
    for k, sub in children:
        found = _first_dict(sub, f"{path}[{k!r}]")
        if found is not None:
            return found
    return None


def _replace(tree, path, new):
    """``tree`` with the dict at ``path`` (as ``_first_dict`` writes it) replaced by ``new``."""
    if not path:
        return new
    k = ast.literal_eval(path[1 : path.index("]")])
    rest = path[path.index("]") + 1 :]
    if isinstance(tree, dict):
        return {**tree, k: _replace(tree[k], rest, new)}
    return tuple(_replace(v, rest, new) if i == k else v for i, v in enumerate(tree))


def _mutations(what, tree):
    """``(bad tree, regex of the error after 'what<path>')`` for a misspelt, missing, extra and misshapen entry."""
    found = _first_dict(tree)
    if found is None:  # a layer without params: the only wrong params is an entry where none is expected
        yield {"extra": jnp.ones(1)}, r" must be empty"
        return
    path, entries = found
    k = min(entries)
    typo = k[:-1] if len(k) > 1 else k * 2
    rest = {n: v for n, v in entries.items() if n != k}
    good = tuple(entries[k].shape)
    bad = good[:-1] + (good[-1] + 1,) if good else (2,)
    at, note = re.escape(path), r"(?P<note> \(.*\))?"
    yield _replace(tree, path, {**rest, typo: entries[k]}), rf"{at}{note} lacks '{k}' and has unexpected '{typo}'"
    yield _replace(tree, path, rest), rf"{at}{note} lacks '{k}';"
    yield _replace(tree, path, {**entries, "extra": jnp.ones(1)}), rf"{at}{note} has unexpected 'extra'"
    shapes = rf"has shape {re.escape(str(bad))}, expected {re.escape(str(good))}"
    yield _replace(tree, path, {**entries, k: jnp.ones(bad)}), rf"{at}\['{k}'\]{note} {shapes}"


@pytest.mark.parametrize("kind, variant", [(k, i) for k, vs in CASES.items() for i in range(len(vs))])
def test_every_layer_kind_names_a_wrong_params_or_state_entry_eagerly_and_under_jit(kind, variant):
    build, shape, owner = CASES[kind][variant]
    layer = build()
    _, params, state = init_with_state(layer, jax.random.key(0), shape)
    x = _x(shape)
    _run(layer, params, state, x, jit=False)  # the right trees pass
    trees = {"params": params, "state": state} if has_state(layer) else {"params": params}
    for what, tree in trees.items():
        for bad, pattern in _mutations(what, tree):
            args = {**trees, what: bad}
            for jit in (False, True):
                with pytest.raises((ValueError, TypeError)) as info:
                    _run(layer, args["params"], args.get("state", {}), x, jit=jit)
                match = re.match(rf"^{kind}: {what}{pattern}", str(info.value))
                assert match, (what, jit, str(info.value), pattern)
                if owner is not None and "note" in match.groupdict():
                    assert match["note"] and owner in match["note"], str(info.value)


@pytest.mark.parametrize("kind", list(CASES))
def test_every_layer_kind_refuses_an_input_shape_that_is_no_shape_naming_a_layer(kind):
    for build, _, _ in CASES[kind]:
        layer = build()
        names = {kind} | {c.name for c in layer.children} | {"Identity"}  # a combinator's first child may refuse it
        for bad in (None, (None, -1), "abc"):
            with pytest.raises((ValueError, TypeError)) as info:
                init_with_state(layer, jax.random.key(0), bad)
            assert str(info.value).split(":")[0] in names, str(info.value)


def test_norm_layers_refuse_misnamed_params_and_state_issue_25_item_3():
    x = _x(X4)
    bn = BatchNorm2D()
    _, params, state = init_with_state(bn, jax.random.key(0), X4)
    torch_names = {"weight": params["gamma"], "bias": params["beta"]}
    cases = [
        (
            {"gama": jnp.full(3, 5.0), "beta": jnp.zeros(3)},
            state,
            r"^BatchNorm2D: params lacks 'gamma' and has unexpected 'gama'",
        ),
        (torch_names, state, r"^BatchNorm2D: params lacks 'beta', 'gamma' and has unexpected 'weight', 'bias'"),
        (params, {**state, "mean": jnp.zeros(1)}, r"^BatchNorm2D: state\['mean'\] has shape \(1,\), expected \(3,\)"),
        (params, {"running_mean": state["mean"], "running_var": state["var"]}, r"^BatchNorm2D: state lacks 'mean'"),
    ]
    for p, s, match in cases:
        for train in (False, True):
            with pytest.raises(ValueError, match=match):
                apply_with_state(bn, p, s, x, train=train)
    plain = BatchNorm2D(affine=False)
    with pytest.raises(ValueError, match=r"^BatchNorm2D: params must be empty .* got a dict with keys \['gamma'\]"):
        apply_with_state(plain, {"gamma": jnp.full(3, 5.0)}, state, x)
    ln = LayerNorm()
    with pytest.raises(ValueError, match=r"^LayerNorm: params lacks 'gamma' and has unexpected 'gama'"):
        ln.apply({"gama": jnp.full(5, 5.0), "beta": jnp.zeros(5)}, _x(V))
    # the right tree is the one used: gamma = 5 scales the standardised batch to a standard deviation of 5
    y, _ = apply_with_state(bn, {"gamma": jnp.full(3, 5.0), "beta": jnp.zeros(3)}, state, x, train=True)
    np.testing.assert_allclose(np.asarray(y).std(axis=(0, 2, 3)), 5.0, rtol=1e-3)


def test_parallel_given_one_shape_says_it_needs_one_per_layer_issue_25_item_12():
    match = r"^parallel: input_shape must be a tuple of 2 shapes, one per layer, got \(None, 3\)"
    with pytest.raises(ValueError, match=match):
        parallel(Linear(2), ReLU()).init(jax.random.key(0), (None, 3))


def test_no_layer_is_built_around_make_layer():
    """``Layer(...)`` is called only in ``layers/base.py``: every other constructor goes through ``make_layer``."""
    root = pathlib.Path(__file__).resolve().parents[1] / "tinyfn"
    calls = []
    for path in root.rglob("*.py"):
        if path.name == "base.py" and path.parent.name == "layers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Layer":
                calls.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not calls, calls


def test_parameterless_layers_accept_any_empty_params():
    for empty in ({}, (), None):
        np.testing.assert_array_equal(ReLU().apply(empty, -jnp.ones(X4)), jnp.zeros(X4))


def test_a_whole_model_cast_to_float64_passes_the_check(x64):
    model = lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    params64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    assert model.apply(params64, jnp.ones((1, 1, 28, 28), jnp.float64)).dtype == jnp.float64


def test_linear_names_a_wrong_dtype_kind_and_a_tuple_for_a_dict():
    layer = Linear(4)
    _, p = layer.init(jax.random.key(0), V)
    with pytest.raises(TypeError, match=r"^Linear: params\['b'\] has dtype int32, expected a floating dtype"):
        layer.apply({**p, "b": p["b"].astype(jnp.int32)}, _x(V))
    with pytest.raises(TypeError, match=r"^Linear: params must be a dict with keys \['b', 'w'\]"):
        layer.apply((p["w"], p["b"]), _x(V))


def test_serial_names_the_layer_and_the_entry_of_a_wrong_child():
    model = lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    params = list(params)
    params[7] = {**params[7], "w": params[7]["w"][:, :100]}  # Linear(120)
    match = r"^serial: params\[7\]\['w'\] \(linear1: layer 7, Linear\) has shape \(400, 100\), expected \(400, 120\)"
    with pytest.raises(ValueError, match=match):
        model.apply(tuple(params), jnp.ones((2, 1, 28, 28)))
    swapped = list(params)
    swapped[0], swapped[3] = swapped[3], swapped[0]
    match = r"^serial: params\[0\]\['b'\] \(conv1: layer 0, Conv2D\) has shape \(16,\), expected \(6,\)"
    with pytest.raises(ValueError, match=match):
        model.apply(tuple(swapped), jnp.ones((2, 1, 28, 28)))


def test_a_nested_entry_is_named_down_to_the_layer_that_owns_it():
    model = serial(branch(Linear(2), serial(ReLU(), Linear(3))), Concat())
    _, params = model.init(jax.random.key(0), V)
    bad = ((params[0][0], (params[0][1][0], {"w": params[0][1][1]["w"]})), params[1])
    match = (
        r"^serial: params\[0\]\[1\]\[1\] \(branch1.block1.linear1: layer 0, branch > layer 1, serial > layer 1, "
        r"Linear\) lacks 'b'"
    )
    with pytest.raises(ValueError, match=match):
        model.apply(bad, _x(V))


def test_the_check_runs_once_per_input_shape_and_at_trace_time_only():
    calls = []

    def init(key, shape):
        calls.append(shape)
        return Linear(3).init(key, shape)

    def apply(params, x, *, key=None, train=False):
        return x @ params["w"] + params["b"][None, :]

    layer = make_layer("Counted", init, apply)
    _, p = Linear(3).init(jax.random.key(0), (None, 4))
    for _ in range(3):
        layer.apply(p, jnp.ones((2, 4)))
    layer.apply(p, jnp.ones((5, 4)))
    assert calls == [(2, 4), (5, 4)]  # init is traced once per input shape, then a cached lookup
    with pytest.raises(ValueError, match=r"^Counted: params lacks 'b'"):
        layer.apply({"w": p["w"]}, jnp.ones((2, 4)))

    traces = []

    @jax.jit
    def step(p, x):
        traces.append(1)
        return layer.apply(p, x)

    step(p, jnp.ones((2, 4)))
    step(p, jnp.ones((2, 4)))
    assert len(traces) == 1  # under jit the check is part of tracing, not of the compiled step
