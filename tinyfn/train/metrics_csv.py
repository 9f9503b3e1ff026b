"""The per-epoch metrics of a run as a CSV file: one header line, one row per epoch of the history.

The file is rewritten from the run's history after every epoch (a temporary file, then a rename): it grows by one
row per epoch, a reader never sees half a row, and a resumed run (whose history comes from its checkpoint) never
repeats or loses one.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tinyfn._files import atomic_write

__all__ = ["METRICS_CSV", "write_metrics_csv"]

METRICS_CSV = "metrics.csv"  # its name inside a checkpoint (run) directory


def _cell(value) -> str:
    return "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)


def write_metrics_csv(path, history: dict) -> Path:
    """Write ``history`` (name -> one value per epoch) to ``path``: the columns in the history's order."""
    names = [k for k, v in history.items() if isinstance(v, list)]
    rows = len(history.get("epoch", ()))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(names)
    for i in range(rows):
        writer.writerow([_cell(history[k][i]) if i < len(history[k]) else "" for k in names])
    return atomic_write(Path(path), lambda f: f.write(text.getvalue().encode()))
