"""Checkpoints in the safetensors format: params (and optimizer state, step, key) plus JSON metadata.

Tensor names are the layer names (``tinyfn.layers.names``) when the model is known (``model=``, or the
architecture recorded in ``metadata["model"]["spec"]``): ``"conv1.w"``, ``"block2.conv1.w"`` for the params,
``"model_state.block2.bn1.mean"`` for the model's state (batch norm's running statistics); otherwise the flattened
pytree paths: ``"0.w"``, ``"4.body.1.gamma"``, and always ``"opt_state.velocity.0.w"`` for the optimizer state. The
metadata records which tensor each leaf is, so checkpoints of either naming load alike.

Two leaves whose names would coincide (``{"a.b": x}`` beside
``{"a": {"b": y}}``) are refused at save time, naming both paths. One JSON metadata
entry holds the format version, the tinyfn version, the pytree structures, the
random key's data (in its own place, so a parameter may be named ``key``) and
whatever the caller adds (model name and configuration, normalisation, history...).
Every dtype safetensors names round-trips bit for bit, bfloat16 and float16
included. Writes are atomic (temporary file, then rename) and respect the umask;
no pickle anywhere. A run directory holds its checkpoint as ``CHECKPOINT_NAME``;
``tinyfn.train.model_io.load_model`` rebuilds the recorded model from such a file.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save

from tinyfn._files import atomic_write
from tinyfn._version import __version__
from tinyfn.train.safetensors_read import CheckpointError, _header, _tensor

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "restore_like",
    "checkpoint_path",
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
]

CHECKPOINT_NAME = "checkpoint.safetensors"  # the checkpoint's name inside a run directory
FORMAT_VERSION = 2  # 2: the random key in the metadata (1: a tensor "key"); both are read
_READS = (1, 2)
_META_KEY = "tinyfn"


class Checkpoint(NamedTuple):
    """What ``load_checkpoint`` returns; ``Checkpoint(params, opt_state, model_state=...)`` is also the template
    ``load_checkpoint(path, like=...)`` restores the states' own classes from."""

    params: Any
    opt_state: Any = None
    step: int | None = None
    key: Any = None
    metadata: dict | None = None
    model_state: Any = None  # the model's state (batch norm's running statistics); None if none was saved


def _key_name(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _structure(tree, prefix: str, rename=None):
    """A JSON description of ``tree`` whose leaves are tensor names (a path's name through ``rename``, if given);
    lists stand for tuples."""
    if isinstance(tree, dict):
        return {"dict": {str(k): _structure(v, f"{prefix}{k}.", rename) for k, v in tree.items()}}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a NamedTuple (optimizer states): named by field
        fields = {f: _structure(getattr(tree, f), f"{prefix}{f}.", rename) for f in tree._fields}
        return {"namedtuple": {"type": type(tree).__name__, "fields": fields}}
    if isinstance(tree, (tuple, list)):
        items = [_structure(v, f"{prefix}{i}.", rename) for i, v in enumerate(tree)]
        return {"tuple" if isinstance(tree, tuple) else "list": items}
    if tree is None:
        return {"none": None}
    return {"leaf": (rename or {}).get(prefix[:-1], prefix[:-1])}


def _rebuild(spec, tensors):
    ((kind, value),) = spec.items()
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
    return tensors[value]  # numpy, in the stored dtype: checked against ``like`` before JAX sees it


def restore_like(tree, template, *, what: str = "opt_state"):
    """``tree``'s arrays in ``template``'s pytree structure and dtypes, matched leaf by leaf in order; a count or
    shape mismatch raises ``CheckpointError`` naming ``what``.

    ``load_checkpoint`` rebuilds an optimizer state as look-alike namedtuples (same names and fields, not the same
    classes); ``restore_like(ckpt.opt_state, optimizer.init(params))`` gives the optimizer's own state classes
    (``tinyfn.train.AdamState``, ``optax.ScaleByAdamState``, ...), which ``optimizer.update`` and ``fit(opt_state=...)``
    take. ``template`` may hold ``jax.ShapeDtypeStruct``s (``jax.eval_shape(optimizer.init, params)``)."""
    leaves, (ref, treedef) = jax.tree_util.tree_leaves(tree), jax.tree_util.tree_flatten(template)
    shape = lambda a: tuple(a.shape) if hasattr(a, "shape") else np.shape(a)  # noqa: E731  (arrays or ShapeDtypeStructs)
    if len(leaves) != len(ref):
        raise CheckpointError(
            f"{what} holds {len(leaves)} arrays but the expected {what} has {len(ref)}: "
            "another optimizer or model wrote it"
        )
    for i, (a, b) in enumerate(zip(leaves, ref)):
        if shape(a) != shape(b) and not (
            shape(b) == () and shape(a) == (1,)
        ):  # (1,): a scalar as older versions saved it
            raise CheckpointError(f"{what} array {i} has shape {shape(a)}, the expected {what} has {shape(b)}")
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(a, dtype=getattr(b, "dtype", None)).reshape(shape(b)) for a, b in zip(leaves, ref)]
    )


def _flatten(tree, group: str, out: dict, paths: dict, rename=None) -> None:
    """Add ``tree``'s leaves to ``out`` under their tensor names; a name two leaves share is refused, naming both."""
    prefix = "" if group == "params" else f"{group}."
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name, where = prefix + ".".join(_key_name(p) for p in path), group + jax.tree_util.keystr(path)
        name = (rename or {}).get(name, name)
        if name in out:
            raise ValueError(
                f"save_checkpoint: {paths[name]} and {where} would both be saved as tensor '{name}'; "
                "rename one of them (a '.' inside a dict key reads as a level of nesting)"
            )
        out[name], paths[name] = np.require(np.asarray(leaf), requirements="C"), where  # C order, a scalar stays 0-d


def _key_data(key) -> list:
    """A random key's raw data (``jax.random.key_data``; raw uint32 key data as it is), as nested lists for JSON."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.asarray(data, np.uint32).tolist()


def _layer_renames(model, metadata, trees) -> dict:
    """``{path name: layer name}`` for the leaves of ``trees`` (``{group prefix: tree}``), from ``model`` or the
    architecture recorded in ``metadata``; ``{}`` when neither names the layers (or names them ambiguously)."""
    from tinyfn.layers import from_spec, leaf_names

    try:
        if model is None and isinstance((metadata or {}).get("model"), dict) and "spec" in metadata["model"]:
            model = from_spec(metadata["model"]["spec"])
        if model is None:
            return {}
        renames = {}
        for prefix, tree in trees.items():
            paths = jax.tree_util.tree_flatten_with_path(tree)[0]
            for (path, _), name in zip(paths, leaf_names(model, tree)):
                renames[prefix + ".".join(_key_name(p) for p in path)] = prefix + name
    except (ValueError, TypeError, KeyError):  # an architecture tinyfn cannot rebuild: the path names
        return {}
    return renames if len(set(renames.values())) == len(renames) else {}


def save_checkpoint(
    path, params, *, opt_state=None, step=None, key=None, metadata=None, model_state=None, model=None
) -> Path:
    """Write ``params`` (and optionally the optimizer state, step, key and model state) to ``path`` atomically.

    ``model_state`` (from ``tinyfn.layers.init_with_state``; ``{}`` or ``None``
    for a stateless model) is stored as its own group of tensors, ``model_state.*``.
    With ``model`` (or a recorded ``metadata["model"]["spec"]``) the params and model state are saved under their
    layer names (``"block2.conv1.w"``).

    ``metadata`` must be JSON-serialisable. An existing file at ``path`` is only
    replaced once the new one is completely written.
    """
    path = Path(path)
    tensors, paths = {}, {}
    rename = _layer_renames(model, metadata, {"": params, "model_state.": model_state or {}})
    for group, tree in (("params", params), ("opt_state", opt_state), ("model_state", model_state)):
        if tree is not None:
            _flatten(tree, group, tensors, paths, rename)
    meta = {
        "format_version": FORMAT_VERSION,
        "tinyfn_version": __version__,
        "params_structure": _structure(params, "", rename),
        "opt_state_structure": None if opt_state is None else _structure(opt_state, "opt_state."),
        "model_state_structure": None if model_state is None else _structure(model_state, "model_state.", rename),
        "step": None if step is None else int(step),
        "has_key": key is not None,
        "key_data": None if key is None else _key_data(key),
        "metadata": metadata or {},
    }
    try:
        blob = save(tensors, metadata={_META_KEY: json.dumps(meta)})
    except TypeError as exc:
        raise TypeError(f"save_checkpoint: metadata must be JSON-serialisable ({exc})") from None
    try:
        atomic_write(
            path, lambda f: f.write(blob), durable=True
        )  # readers see the old file or the new one, never a part
    except OSError as exc:
        kept = "the previous checkpoint there is unchanged" if path.exists() else "nothing was written"
        message = f"could not save checkpoint {path}: {exc.strerror or exc} ({len(blob):,} bytes); {kept}"
        raise (type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)) from exc
    return path


def _read(path: Path):
    """The tensors (numpy, in their stored dtypes) and the tinyfn metadata of ``path``, every header field checked."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:  # the header first: a lying or foreign file is refused before its body is read
            header, n = _header(f, os.fstat(f.fileno()).st_size)
            f.seek(8 + n)
            body = f.read()
        entries = {k: e for k, e in header.items() if k != "__metadata__"}
        tensors = {name: _tensor(path, name, entry, body) for name, entry in entries.items()}
        with_meta = header.get("__metadata__", {}) or {}
    except (ValueError, OverflowError, UnicodeDecodeError, TypeError, AttributeError, IndexError, KeyError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint (truncated or corrupted?): {exc}"
        ) from None
    if _META_KEY not in with_meta:
        raise CheckpointError(
            f"{path} is a safetensors file but not a tinyfn checkpoint (no '{_META_KEY}' metadata entry)"
        )
    try:
        meta = json.loads(with_meta[_META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the tinyfn metadata is not valid JSON ({exc})") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} was written by a newer tinyfn; "
            f"this one reads versions {_READS} (upgrade tinyfn)"
        )
    if version not in _READS:
        raise CheckpointError(f"{path}: checkpoint format version {version!r}, this tinyfn reads {_READS}")
    return tensors, meta


def _leaf_names(spec) -> list[str]:
    ((kind, value),) = spec.items()
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
        raise CheckpointError(
            f"{path}: parameter structure differs from the model's: {jax.tree_util.tree_structure(params)}"
        )


def load_checkpoint(path, like=None) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``.

    ``like`` (a params pytree, e.g. from ``model.init``; only shapes and dtypes
    are read; or a ``Checkpoint(params, opt_state, model_state=...)`` of templates, e.g.
    ``Checkpoint(params, optimizer.init(params), model_state=state)``: then the
    optimizer and model states come back in the templates' own classes, tinyfn's
    ``AdamState`` or optax's ``ScaleByAdamState``, through ``restore_like``) is checked key by key: the
    first missing or unexpected key, or
    shape or dtype mismatch (of the stored dtype: a float64 checkpoint is refused
    for a float32 model, with or without ``jax_enable_x64``), raises
    ``CheckpointError`` naming it. A truncated, corrupted or foreign file, or a
    tensor of a dtype this reader cannot hold, raises ``CheckpointError`` too.
    """
    path = Path(path)
    templates = like if isinstance(like, Checkpoint) else None
    like = like.params if templates is not None else like
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
        _check_like(path, params, like)  # in the stored dtypes: float64 is refused for float32 even with x64 off
    params, opt_state, model_state = jax.tree_util.tree_map(jnp.asarray, (params, opt_state, model_state))
    if templates is not None:
        opt_state, model_state = _restored(path, templates, opt_state, model_state)
    return Checkpoint(params, opt_state, meta.get("step"), _key(meta, tensors), meta.get("metadata", {}), model_state)


def _restored(path, templates, opt_state, model_state):
    """The states in the classes of ``templates``' (a ``Checkpoint`` of templates; a ``None`` template leaves its
    state as rebuilt), a mismatch a ``CheckpointError`` naming the file and the state."""
    out = []
    for what, tree, template in (
        ("opt_state", opt_state, templates.opt_state),
        ("model_state", model_state, templates.model_state),
    ):
        if tree is None and template is not None and jax.tree_util.tree_leaves(template):
            raise CheckpointError(f"{path} holds no {what}, but like= gives one to restore")
        try:
            out.append(tree if tree is None or template is None else restore_like(tree, template, what=what))
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    return tuple(out)


def _key(meta, tensors):
    """The saved random key: in the metadata (format 2), or the tensor ``"key"`` of a format 1 file; ``None``
    if none was saved."""
    if not meta.get("has_key"):
        return None
    if meta.get("key_data") is not None:
        return jax.random.wrap_key_data(jnp.asarray(np.asarray(meta["key_data"], np.uint32)))
    return jax.random.wrap_key_data(jnp.asarray(tensors["key"])) if "key" in tensors else None


def checkpoint_path(path_or_run_dir) -> Path:
    """``path`` itself if it is a file, else ``path / CHECKPOINT_NAME``; ``FileNotFoundError`` if neither exists."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (pass a run directory or a .safetensors file)")
    return path
