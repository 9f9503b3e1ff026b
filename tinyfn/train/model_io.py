"""Deprecated: ``load_model`` and ``checkpoint_path`` live in ``tinyfn.train.checkpoint`` (import them from ``tinyfn.train``)."""

import warnings

from tinyfn.train.checkpoint import checkpoint_path, load_model

__all__ = ["load_model", "checkpoint_path"]

warnings.warn(
    "tinyfn.train.model_io is deprecated and will be removed in the next release; "
    "import load_model and checkpoint_path from tinyfn.train",
    DeprecationWarning,
    stacklevel=2,
)
