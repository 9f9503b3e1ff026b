"""Rebuild a trained model from a checkpoint or a run directory."""

from __future__ import annotations

from pathlib import Path

import jax

from tinyfn.models import get_model
from tinyfn.train.checkpoint import CheckpointError, load_checkpoint

__all__ = ["load_model", "checkpoint_path"]


def checkpoint_path(path_or_run_dir) -> Path:
    """``path`` itself if it is a file, else ``path/checkpoint.safetensors``."""
    from tinyfn.train.loop import CHECKPOINT_NAME

    path = Path(path_or_run_dir)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (pass a run directory or a .safetensors file)")
    return path


def load_model(path_or_run_dir):
    """``(model, params, metadata)`` from a checkpoint that records its model (as ``python -m tinyfn train`` writes).

    The model is rebuilt from the registry ``tinyfn.models.MODELS`` with the
    recorded configuration, and the stored params are checked against its
    shapes; a mismatch raises ``CheckpointError`` naming the first difference.
    """
    path = checkpoint_path(path_or_run_dir)
    meta = load_checkpoint(path).metadata
    spec = meta.get("model")
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{path} does not record its model (metadata 'model': {{'name', 'kwargs', 'input_shape'}})")
    try:
        model = get_model(spec["name"], **spec.get("kwargs", {}))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild model {spec!r}: {exc}") from None
    input_shape = tuple(spec.get("input_shape", (1, 28, 28)))
    like = jax.eval_shape(lambda k: model.init(k, (None, *input_shape))[1], jax.random.key(0))
    ckpt = load_checkpoint(path, like=like)
    return model, ckpt.params, ckpt.metadata
