"""Models in checkpoints: ``model_record`` writes the architecture into a checkpoint's metadata,
``load_model`` rebuilds the model from it and loads its params and state.

The file format itself (tensors, metadata, atomic writes) is ``tinyfn.train.checkpoint``'s.
"""

from __future__ import annotations

import jax

from tinyfn.layers import from_spec, init_with_state, to_spec
from tinyfn.models import get_model
from tinyfn.train.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, restore_like

__all__ = ["LoadedModel", "model_record", "load_model"]


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
