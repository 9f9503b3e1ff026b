"""Checkpoints in the safetensors format: params (and optimizer state, step, key) plus JSON metadata.

Tensor names are the flattened pytree paths: ``"0.w"``, ``"3.b"`` for a
``serial`` model's params, ``"opt_state.velocity.0.w"`` for the optimizer
state, ``"model_state.1.mean"`` for the model's state (batch norm's running
statistics), ``"key"`` for the random key's data. One JSON metadata entry holds the
format version, the tinyfn version, the pytree structures, and whatever the
caller adds (model name and configuration, normalisation, history...).
Writes are atomic (temporary file, then rename) and respect the umask; no
pickle anywhere. A run directory holds its checkpoint as ``CHECKPOINT_NAME``;
``load_model`` rebuilds the recorded model from such a file.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from tinyfn._files import atomic_write

__all__ = ["LoadedModel", "model_record", "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "load_model", "checkpoint_path", "CHECKPOINT_NAME", "FORMAT_VERSION"]

CHECKPOINT_NAME = "checkpoint.safetensors"  # the checkpoint's name inside a run directory
FORMAT_VERSION = 1
_META_KEY = "tinyfn"


class CheckpointError(ValueError):
    """A file that is not a readable tinyfn checkpoint, or one that does not match what was expected."""


class Checkpoint(NamedTuple):
    params: Any
    opt_state: Any
    step: int | None
    key: Any
    metadata: dict
    model_state: Any = None  # the model's state (batch norm's running statistics); None if none was saved


def _key_name(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _structure(tree, prefix: str):
    """A JSON description of ``tree`` whose leaves are tensor names; lists stand for tuples."""
    if isinstance(tree, dict):
        return {"dict": {str(k): _structure(v, f"{prefix}{k}.") for k, v in tree.items()}}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a NamedTuple (optimizer states): named by field
        fields = {f: _structure(getattr(tree, f), f"{prefix}{f}.") for f in tree._fields}
        return {"namedtuple": {"type": type(tree).__name__, "fields": fields}}
    if isinstance(tree, (tuple, list)):
        return {"tuple" if isinstance(tree, tuple) else "list": [_structure(v, f"{prefix}{i}.") for i, v in enumerate(tree)]}
    if tree is None:
        return {"none": None}
    return {"leaf": prefix[:-1]}


def _rebuild(spec, tensors):
    (kind, value), = spec.items()
    if kind == "dict":
        return {k: _rebuild(v, tensors) for k, v in value.items()}
    if kind == "namedtuple":  # rebuilt as a namedtuple of the same name and fields (see ``restore_like``)
        cls = collections.namedtuple(value["type"], list(value["fields"]))
        return cls(*(_rebuild(v, tensors) for v in value["fields"].values()))
    if kind in ("tuple", "list"):
        items = [_rebuild(v, tensors) for v in value]
        return tuple(items) if kind == "tuple" else items
    if kind == "none":
        return None
    return jnp.asarray(tensors[value])


def restore_like(tree, template, *, what: str = "opt_state"):
    """``tree``'s arrays in ``template``'s pytree structure (e.g. an optimizer's NamedTuple state from
    ``optimizer.init(params)``), matched leaf by leaf in order; a count or shape mismatch raises ``CheckpointError``."""
    leaves, (ref, treedef) = jax.tree_util.tree_leaves(tree), jax.tree_util.tree_flatten(template)
    shape = lambda a: tuple(a.shape) if hasattr(a, "shape") else np.shape(a)  # noqa: E731  (arrays or ShapeDtypeStructs)
    if len(leaves) != len(ref):
        raise CheckpointError(f"{what} holds {len(leaves)} arrays but the expected {what} has {len(ref)}: another optimizer or model wrote it")
    for i, (a, b) in enumerate(zip(leaves, ref)):
        if shape(a) != shape(b) and not (shape(b) == () and shape(a) == (1,)):  # (1,): a scalar as older versions saved it
            raise CheckpointError(f"{what} array {i} has shape {shape(a)}, the expected {what} has {shape(b)}")
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a, dtype=getattr(b, "dtype", None)).reshape(shape(b)) for a, b in zip(leaves, ref)])


def _flatten(tree, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = prefix + ".".join(_key_name(p) for p in path)
        out[name] = np.require(np.asarray(leaf), requirements="C")  # C order, and a scalar stays 0-d
    return out


def save_checkpoint(path, params, *, opt_state=None, step=None, key=None, metadata=None, model_state=None) -> Path:
    """Write ``params`` (and optionally the optimizer state, step, key and model state) to ``path`` atomically.

    ``model_state`` (from ``tinyfn.layers.init_with_state``; ``{}`` or ``None``
    for a stateless model) is stored as its own group of tensors, ``model_state.*``.

    ``metadata`` must be JSON-serialisable. An existing file at ``path`` is only
    replaced once the new one is completely written.
    """
    from safetensors.numpy import save

    path = Path(path)
    tensors = _flatten(params, "")
    if opt_state is not None:
        tensors.update(_flatten(opt_state, "opt_state."))
    if model_state is not None:
        tensors.update(_flatten(model_state, "model_state."))
    if key is not None:
        tensors["key"] = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    from tinyfn import __version__

    meta = {
        "format_version": FORMAT_VERSION,
        "tinyfn_version": __version__,
        "params_structure": _structure(params, ""),
        "opt_state_structure": None if opt_state is None else _structure(opt_state, "opt_state."),
        "model_state_structure": None if model_state is None else _structure(model_state, "model_state."),
        "step": None if step is None else int(step),
        "has_key": key is not None,
        "metadata": metadata or {},
    }
    try:
        blob = save(tensors, metadata={_META_KEY: json.dumps(meta)})
    except TypeError as exc:
        raise TypeError(f"save_checkpoint: metadata must be JSON-serialisable ({exc})") from None
    try:
        atomic_write(path, lambda f: f.write(blob), durable=True)  # readers see the old file or the new one, never a part
    except OSError as exc:
        kept = "the previous checkpoint there is unchanged" if path.exists() else "nothing was written"
        message = f"could not save checkpoint {path}: {exc.strerror or exc} ({len(blob):,} bytes); {kept}"
        raise (type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)) from exc
    return path


MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


def _read(path: Path):
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:  # the header first: a lying or foreign file is refused before its body is read
            size = os.fstat(f.fileno()).st_size
            with_meta = _header_metadata(f, size)
            f.seek(0)
            data = f.read()
        tensors = load(data)
    except (SafetensorError, ValueError, OverflowError, UnicodeDecodeError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint (truncated or corrupted?): {exc}") from None
    if _META_KEY not in with_meta:
        raise CheckpointError(f"{path} is a safetensors file but not a tinyfn checkpoint (no '{_META_KEY}' metadata entry)")
    try:
        meta = json.loads(with_meta[_META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the tinyfn metadata is not valid JSON ({exc})") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} was written by a newer tinyfn; this one reads version {FORMAT_VERSION} (upgrade tinyfn)")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r}, this tinyfn reads {FORMAT_VERSION}")
    return tensors, meta


def _header_metadata(f, size: int) -> dict:
    """The ``__metadata__`` of a safetensors header, its length and offsets checked against the file's ``size``."""
    if size < 8:
        raise ValueError(f"{size} bytes is too short for a safetensors header")
    n = int.from_bytes(f.read(8), "little")
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"header claims {n:,} bytes, over the {MAX_HEADER_BYTES:,}-byte limit")
    if n > size - 8:
        raise ValueError(f"header of {n:,} bytes does not fit in a {size:,}-byte file")
    header = json.loads(f.read(n).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    ends = [e.get("data_offsets", [0, 0])[1] for k, e in header.items() if k != "__metadata__" and isinstance(e, dict)]
    body = size - 8 - n
    if ends and max(ends) != body:
        raise ValueError(f"the header's tensors end at byte {max(ends):,} of the body, but the body has {body:,} bytes")
    return header.get("__metadata__", {}) or {}


def _leaf_names(spec) -> list[str]:
    (kind, value), = spec.items()
    if kind == "dict":
        return [n for v in value.values() for n in _leaf_names(v)]
    if kind in ("tuple", "list"):
        return [n for v in value for n in _leaf_names(v)]
    if kind == "namedtuple":
        return [n for v in value["fields"].values() for n in _leaf_names(v)]
    return [] if kind == "none" else [value]


def _check_like(path, params, like):
    got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    for p, ref in jax.tree_util.tree_flatten_with_path(like)[0]:
        name = ".".join(_key_name(e) for e in p)
        if p not in got:
            raise CheckpointError(f"{path}: missing parameter '{name}' (expected shape {tuple(ref.shape)})")
        a = got.pop(p)
        if tuple(a.shape) != tuple(ref.shape):
            raise CheckpointError(f"{path}: parameter '{name}' has shape {tuple(a.shape)}, expected {tuple(ref.shape)}")
        if a.dtype != ref.dtype:
            raise CheckpointError(f"{path}: parameter '{name}' has dtype {a.dtype}, expected {ref.dtype}")
    if got:
        extra = ".".join(_key_name(e) for e in next(iter(got)))
        raise CheckpointError(f"{path}: unexpected parameter '{extra}' that the model does not have")
    if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(like):
        raise CheckpointError(f"{path}: parameter structure differs from the model's: {jax.tree_util.tree_structure(params)}")


def load_checkpoint(path, like=None) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``.

    ``like`` (a params pytree, e.g. from ``model.init``; only shapes and dtypes
    are read) is checked key by key: the first missing or unexpected key, or
    shape or dtype mismatch, raises ``CheckpointError`` naming it. A truncated,
    corrupted or foreign file raises ``CheckpointError`` too.
    """
    path = Path(path)
    tensors, meta = _read(path)
    try:
        names = _leaf_names(meta["params_structure"])
        if meta.get("opt_state_structure"):
            names += _leaf_names(meta["opt_state_structure"])
        if meta.get("model_state_structure"):
            names += _leaf_names(meta["model_state_structure"])
        missing = [n for n in names if n not in tensors]
        if missing:
            raise CheckpointError(f"{path}: tensor '{missing[0]}' is listed in the metadata but missing from the file")
        params = _rebuild(meta["params_structure"], tensors)
        opt_state = _rebuild(meta["opt_state_structure"], tensors) if meta.get("opt_state_structure") else None
        model_state = _rebuild(meta["model_state_structure"], tensors) if meta.get("model_state_structure") else None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: malformed tinyfn metadata ({type(exc).__name__}: {exc})") from None
    if like is not None:
        _check_like(path, params, like)
    key = jax.random.wrap_key_data(jnp.asarray(tensors["key"])) if meta.get("has_key") and "key" in tensors else None
    return Checkpoint(params, opt_state, meta.get("step"), key, meta.get("metadata", {}), model_state)


def checkpoint_path(path_or_run_dir) -> Path:
    """``path`` itself if it is a file, else ``path / CHECKPOINT_NAME``; ``FileNotFoundError`` if neither exists."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (pass a run directory or a .safetensors file)")
    return path


class LoadedModel(tuple):
    """``load_model``'s result: unpacks as ``(model, params, metadata)``; ``model_state`` is the model's state
    (``{}`` for a stateless model; batch norm's running statistics otherwise)."""

    def __new__(cls, model, params, metadata, model_state):
        loaded = super().__new__(cls, (model, params, metadata))
        loaded.model_state = model_state
        return loaded

    model = property(lambda self: self[0])
    params = property(lambda self: self[1])
    metadata = property(lambda self: self[2])


def model_record(model, input_shape, **extra) -> dict:
    """The metadata entry ``"model"`` that ``load_model`` rebuilds from: the architecture (``to_spec``),
    the input shape without the batch, and ``extra`` (e.g. the registry ``name`` and ``kwargs``)."""
    from tinyfn.layers import to_spec

    return {**extra, "spec": to_spec(model), "input_shape": [int(d) for d in input_shape]}


def _rebuild_model(path, record):
    from tinyfn.layers import from_spec
    from tinyfn.models import get_model

    if "spec" in record:
        try:
            return from_spec(record["spec"], _where="model")
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: cannot rebuild the recorded model: {exc}") from None
    try:  # checkpoints written before the architecture was recorded: a registry name and its kwargs
        return get_model(record["name"], **record.get("kwargs", {}))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild model {record!r}: {exc}") from None


def load_model(path_or_run_dir) -> LoadedModel:
    """``(model, params, metadata)`` from a checkpoint that records its model (as ``python -m tinyfn train`` writes).

    ``path_or_run_dir`` is a ``.safetensors`` file or a run directory holding
    ``CHECKPOINT_NAME``. The model is rebuilt from the recorded architecture
    (``metadata["model"]["spec"]``, written by ``model_record`` from
    ``tinyfn.layers.to_spec``: any model composed of built-in or registered layers;
    a layer tinyfn does not know is named in the error), or, for older checkpoints,
    from the registry ``tinyfn.models.MODELS`` by name and kwargs. The stored params
    (and model state) are checked against the model's shapes; a mismatch raises
    ``CheckpointError`` naming the first difference. The result unpacks as three;
    its ``model_state`` attribute holds the model's state for ``apply_with_state``.
    """
    from tinyfn.layers import init_with_state

    path = checkpoint_path(path_or_run_dir)
    meta = load_checkpoint(path).metadata
    record = meta.get("model")
    if not isinstance(record, dict) or not ("spec" in record or "name" in record):
        raise CheckpointError(f"{path} does not record its model (metadata 'model': {{'spec', 'input_shape'}}, see model_record)")
    model = _rebuild_model(path, record)
    input_shape = tuple(record.get("input_shape", (1, 28, 28)))
    _, like, like_state = jax.eval_shape(lambda k: init_with_state(model, k, (None, *input_shape)), jax.random.key(0))
    ckpt = load_checkpoint(path, like=like)
    state = ckpt.model_state
    if state is None:
        if jax.tree_util.tree_leaves(like_state):
            raise CheckpointError(f"{path}: the model carries state (running statistics) but the checkpoint holds none")
        state = {}
    else:
        state = restore_like(state, like_state, what="model_state")
    return LoadedModel(model, ckpt.params, ckpt.metadata, state)
