"""Figures without pyplot: ``matplotlib.figure.Figure`` objects, saved as PNG atomically when given a path.

Nothing here selects or switches matplotlib's backend: a ``Figure`` built
directly renders through Agg when saved and shows in a notebook as it is, so
the caller's backend (inline, a GUI, Agg) stays whatever it was.
"""

from __future__ import annotations

from pathlib import Path

from tinyfn._files import atomic_write


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize, squeeze: bool = True, layout=None, **subplot_kw):
    """``(fig, axes)`` like ``plt.subplots``, but a free-standing ``Figure`` that no pyplot state holds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)
    return fig, axes


def finish(fig, path=None):
    """Save ``fig`` as a PNG at ``path`` (if given: temporary file, then rename; the umask decides the mode); return
    ``fig``."""
    if path is not None:
        atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=100))
    return fig
