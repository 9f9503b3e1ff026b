"""The code base keeps its shape: small files, short functions, and imports that only ever point down the layers.

Read from the source (an AST walk of ``tinyfn/``), nothing is imported or run.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "tinyfn"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60  # from ``def`` to the last line of the body, docstring included

# The layers, lowest first: a module may import its own layer and the ones below it, never one above. Derived from
# the imports as they are: the private helpers import nothing of tinyfn's but each other; the layers (ops, their rules
# and the layer constructors) only those helpers and the initializers; losses, the reference and the gradient checks
# sit on the layers; the model zoo on the layers; the package face (``tinyfn/__init__.py``) gathers those; data
# loading is independent; training uses layers and losses (and the model zoo, to rebuild a checkpoint's model); the
# visualisations use the layers; the command line sits on everything.
LAYERS = (
    (
        "tinyfn._checks",
        "tinyfn._files",
        "tinyfn._logsumexp",
        "tinyfn._plotting",
        "tinyfn._malloc",
        "tinyfn._version",
        "tinyfn._gradcheck_report",
        "tinyfn._torch_oracles",
    ),
    ("tinyfn.initializers",),
    ("tinyfn.layers",),
    ("tinyfn.losses",),
    ("tinyfn.reference",),
    ("tinyfn.gradcheck", "tinyfn.registry"),
    (
        "tinyfn.testing",
        "tinyfn._builtin_ops_pooling",
        "tinyfn._builtin_ops",
        "tinyfn._builtin_ops_transformer",
        "tinyfn._builtin_ops_layers",
    ),  # the checks, the registered ops
    ("tinyfn.models",),
    ("tinyfn",),  # the package face
    ("tinyfn.data",),
    ("tinyfn.train",),
    ("tinyfn.visualize",),
    ("tinyfn.cli", "tinyfn.__main__"),
)


def _modules():
    """``{dotted name: path}`` of every module in ``tinyfn/`` (a package by its ``__init__``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name, path):
    """The tinyfn modules ``name`` imports, at any depth of the file (function-level imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for a in node.names:  # ``from pkg import sub`` imports the submodule where there is one
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name):
    """The index in ``LAYERS`` of the longest prefix that names ``name``'s layer."""
    best = None
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (i, prefix)
    return None if best is None else best[0]


def _rel(path):
    return path.relative_to(ROOT.parent).as_posix()


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in MODULES if _layer(name) is None)
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
        for name, targets in GRAPH.items()
        for target in sorted(targets)
        if _layer(target) is not None and _layer(name) is not None and _layer(target) > _layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    state, stack, cycles = {}, [], []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for target in sorted(GRAPH[name]):
            if target == name:
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert not cycles, "\n".join(cycles)


def test_no_file_is_over_the_line_limit():
    long = [f"{_rel(p)}: {n} lines" for p in MODULES.values() if (n := p.read_text().count("\n")) > MAX_FILE_LINES]
    assert not long, long


def test_no_function_is_over_the_line_limit():
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{_rel(path)}:{node.name}: {n} lines")
    assert not long, "\n".join(long)
