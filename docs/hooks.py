"""mkdocs hook: put the course's notebooks into docs/notebooks/ before the pages are collected.

The executed copies are used when ``$TINYFN_EXECUTED_NOTEBOOKS`` names a folder that holds them (``.ci/run`` runs
the notebook tests first, which write them there); otherwise the committed notebooks, which carry no outputs.
A notebook is rewritten only when its content changed, so ``mkdocs serve`` does not rebuild in a loop.
"""

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "notebooks"
TARGET = ROOT / "docs" / "notebooks"


def copy_notebooks() -> tuple[int, int]:
    """Copy every ``notebooks/*.ipynb`` into ``docs/notebooks/``; returns (executed copies, plain copies)."""
    executed_dir = (
        Path(os.environ["TINYFN_EXECUTED_NOTEBOOKS"]) if os.environ.get("TINYFN_EXECUTED_NOTEBOOKS") else None
    )
    TARGET.mkdir(parents=True, exist_ok=True)
    counts = [0, 0]
    wanted = set()
    for path in sorted(SOURCE.glob("*.ipynb")):
        executed = executed_dir / path.name if executed_dir is not None else None
        source = executed if executed is not None and executed.is_file() else path
        counts[source is path] += 1
        wanted.add(path.name)
        target = TARGET / path.name
        if not target.is_file() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)
    for stale in TARGET.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    return counts[0], counts[1]


def on_pre_build(config, **kwargs):
    executed, plain = copy_notebooks()
    print(f"docs/hooks.py: notebooks: {executed} executed, {plain} without outputs")
