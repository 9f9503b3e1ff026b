"""The installed tinyfn's version, read once from its package metadata (the single source: ``pyproject.toml``)."""

import importlib.metadata

__version__ = importlib.metadata.version("tinyfn")
