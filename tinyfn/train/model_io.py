"""Models in checkpoints: ``model_record`` writes the architecture into a checkpoint's metadata,
``load_model`` rebuilds the model from it and loads its params and state, ``load_params`` loads some layers' params
by name into a model's (a partial load: a pretrained stem into a new head).

The file format itself (tensors, metadata, atomic writes) is ``tinyfn.train.checkpoint``'s.
"""

from __future__ import annotations

import jax

from tinyfn.layers import from_spec, init_with_state, leaf_names, named_params, param_mask, to_spec
from tinyfn.layers.names import _matches
from tinyfn.models import get_model
from tinyfn.train.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, restore_like

__all__ = ["LoadedModel", "model_record", "load_model", "load_params"]


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
    return {**extra, "spec": to_spec(model), "input_shape": [int(d) for d in input_shape]}


def _rebuild_model(path, record):
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
    path = checkpoint_path(path_or_run_dir)
    meta = load_checkpoint(path).metadata
    record = meta.get("model")
    if not isinstance(record, dict) or not ("spec" in record or "name" in record):
        raise CheckpointError(
            f"{path} does not record its model (metadata 'model': {{'spec', 'input_shape'}}, see model_record)"
        )
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


def _fill(path, what, model, tree, stored: dict, flags) -> object:
    """``tree`` with each leaf whose flag is set replaced by the stored tensor of its layer name."""
    leaves, structure = jax.tree_util.tree_flatten(tree)
    out = []
    for name, leaf, take in zip(leaf_names(model, tree), leaves, flags):
        if take:
            if name not in stored:
                known = ", ".join(list(stored)[:8])
                raise CheckpointError(f"{path}: no {what} tensor for '{name}' (the checkpoint holds {known}, ...)")
            new = stored[name]
            if new.shape != leaf.shape or new.dtype != leaf.dtype:
                raise CheckpointError(
                    f"{path}: {what} '{name}' is {new.dtype}{list(new.shape)} in the checkpoint, the model's is "
                    f"{leaf.dtype}{list(leaf.shape)}"
                )
            leaf = new
        out.append(leaf)
    return jax.tree_util.tree_unflatten(structure, out)


def load_params(path_or_run_dir, params, model, *, only=("*",), model_state=None):
    """``params`` with the layers named by ``only`` loaded from a checkpoint, matched by layer name; the rest kept.

    ``only`` holds ``param_mask`` patterns (``("stem", "block1")``, ``("conv*",)``); each must name some of
    ``model``'s params. The checkpoint's tensors are read by their layer names: a checkpoint that records its model
    is named through that architecture (so inserting a layer upstream does not shift what loads where), an older
    positional one through ``model``'s. With ``model_state`` (batch norm's statistics) the state of the same layers
    loads too and ``(params, model_state)`` is returned. A missing name, or a shape or dtype that differs, raises
    ``CheckpointError`` naming it::

        params = load_params("runs/pretrained", params, model, only=("conv1", "bn1", "block1"))
    """
    path = checkpoint_path(path_or_run_dir)
    ckpt = load_checkpoint(path)
    source = model
    record = ckpt.metadata.get("model")
    if isinstance(record, dict) and "spec" in record:
        source = _rebuild_model(path, record)
    only = (only,) if isinstance(only, str) else tuple(only)
    flags = jax.tree_util.tree_leaves(param_mask(model, params, include=only))
    params = _fill(path, "parameter", model, params, named_params(source, ckpt.params), flags)
    if model_state is None:
        return params
    names = leaf_names(model, model_state)
    flags = [any(_matches(n, p) for p in only) for n in names]
    stored = named_params(source, ckpt.model_state if ckpt.model_state is not None else {})
    return params, _fill(path, "state", model, model_state, stored, flags)
