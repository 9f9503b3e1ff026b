"""Pictures of what a network sees: DeconvNet grids, filters, feature maps, a three-rule comparison, attention.

Each function builds and returns a ``matplotlib.figure.Figure``, written as a
PNG atomically (temporary file, then rename) when given a ``path``; none touches
pyplot or matplotlib's backend. Images are ``(C, H, W)`` with ``C`` 1 or 3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tinyfn._plotting import finish, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["minmax", "plot_deconv_grid", "plot_filters", "plot_feature_maps", "plot_comparison", "plot_attention"]


def minmax(a) -> np.ndarray:
    """Scale to ``[0, 1]`` (a constant array becomes 0.5)."""
    a = np.asarray(a, np.float64)
    lo, hi = a.min(), a.max()
    return np.full(a.shape, 0.5) if hi - lo < 1e-12 else (a - lo) / (hi - lo)


def _display(img) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W)`` or ``(H, W, 3)`` for imshow."""
    img = np.asarray(img)
    if img.ndim == 2:
        return img
    if img.shape[0] == 1:
        return img[0]
    if img.shape[0] == 3:
        return np.moveaxis(img, 0, -1)
    raise ValueError(f"can only draw images with 1 or 3 channels, got shape {img.shape}")


def _mosaic(tiles, ncols, pad=1, fill=1.0):
    """Tile equally sized ``(h, w)`` or ``(h, w, 3)`` images into one array with ``pad``-pixel gaps."""
    tiles = [np.asarray(t, np.float64) for t in tiles]
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    nrows = -(-len(tiles) // ncols)
    extra = tiles[0].shape[2:]
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad, *extra), fill)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        top, left = r * (h + pad) + (h - t.shape[0]) // 2, c * (w + pad) + (w - t.shape[1]) // 2
        out[top : top + t.shape[0], left : left + t.shape[1]] = t
    return out


def plot_deconv_grid(projections, patches, path=None, *, layer: str, channels, image_indices, ncols: int = 3) -> Figure:
    """Zeiler & Fergus's Figure 2 layout: per feature map, its top projections beside the matching input patches.

    Args:
      projections: per channel, a sequence of ``k`` projections ``(C, h, w)`` (cropped to the receptive field).
      patches: per channel, the ``k`` input patches of the same crops.
      path: where to write the PNG (optional); the ``Figure`` is returned.
      layer, channels, image_indices: for the titles (``image_indices[i][j]`` is the dataset index of tile ``j``).
    """
    rows = len(channels)
    fig, axes = new_figure(rows, 2, figsize=(6.4, 3.1 * rows + 0.3), squeeze=False)
    for r, (c, projs, pats, idx) in enumerate(zip(channels, projections, patches, image_indices)):
        for ax, tiles, what in ((axes[r, 0], projs, "projections"), (axes[r, 1], pats, "input patches")):
            mosaic = _mosaic([_display(minmax(t)) for t in tiles], ncols)
            ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{layer} · channel {c} · {what}", fontsize=9)
        shown = ", ".join(str(int(i)) for i in idx)
        axes[r, 0].set_xlabel(f"images {shown}", fontsize=7)
    fig.suptitle(f"DeconvNet: strongest activations of {layer}, projected to pixels", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return finish(fig, path)


def plot_filters(w, path=None, *, title: str = "first-layer filters", ncols: int = 8) -> Figure:
    """A grid of filters ``w (K, C, kh, kw)``: one shared symmetric blue-red scale for 1-channel filters,
    per-filter min-max colour for 3-channel ones."""
    w = np.asarray(w)
    k = w.shape[0]
    ncols = min(ncols, k)
    nrows = -(-k // ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows + 0.4), squeeze=False)
    vmax = float(np.abs(w).max()) or 1.0
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.axis("off")
            continue
        if w.shape[1] == 1:
            im = ax.imshow(w[i, 0], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        else:
            ax.imshow(_display(minmax(w[i])), interpolation="nearest")
        ax.set_title(f"filter {i}", fontsize=8)
    if w.shape[1] == 1:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    return finish(fig, path)


def plot_feature_maps(maps, path=None, *, title: str, image=None, ncols: int = 8) -> Figure:
    """All maps ``(C, H, W)`` of one layer for one image, each on its own scale (viridis), with the input
    ``image (C', H', W')`` (if given) drawn on the left; returns the ``Figure``."""
    maps = np.asarray(maps)
    c = maps.shape[0]
    ncols = min(ncols, c)
    nrows = -(-c // ncols)
    lead = 0 if image is None else 1
    fig, axes = new_figure(
        nrows, ncols + lead, figsize=(1.5 * (ncols + lead), 1.7 * nrows + 0.6), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        axes[0, 0].imshow(_display(minmax(image)), cmap="gray", interpolation="nearest")
        axes[0, 0].set_title("input", fontsize=8)
        for ax in axes[1:, 0]:
            ax.axis("off")
    for i, ax in enumerate(axes[:, lead:].flat):
        if i >= c:
            ax.axis("off")
            continue
        ax.imshow(maps[i], cmap="viridis", interpolation="nearest")
        ax.set_title(f"channel {i}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return finish(fig, path)


def plot_comparison(
    images, columns: dict, path=None, *, row_titles, title: str = "three ways back to pixels"
) -> Figure:
    """Rows of ``[input, method 1, method 2, ...]``.

    ``images (n, C, H, W)``; ``columns`` maps a method name to ``(n, C, H, W)``
    maps. Saliency is drawn as ``|g|`` (max over channels), the others min-max
    scaled; each tile on its own scale.
    """

    def draw(ax, name, m):
        m = np.asarray(m)
        if name == "saliency":
            ax.imshow(minmax(np.abs(m).max(axis=0)), cmap="hot", interpolation="nearest")
        else:
            ax.imshow(_display(minmax(m)), cmap="gray", interpolation="nearest")
        return name + (" |g|" if name == "saliency" else "")

    return _image_grid(images, columns, row_titles, draw, title, path)


def plot_attention(
    images, columns: dict, path=None, *, row_titles, title: str = "what the class token attends to"
) -> Figure:
    """Rows of ``[input, map 1, map 2, ...]``: attention over the patch grid beside each image.

    ``images (n, C, H, W)``; ``columns`` maps a title (``"block 1"``, ``"rollout"``) to
    ``(n, h, w)`` maps on the patch grid (e.g. the class token's row of ``attention_maps``,
    heads averaged, or of ``attention_rollout``), each drawn over the image's extent on its
    own scale (inferno).
    """

    def draw(ax, name, m):
        ax.imshow(minmax(m), cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
        return name

    return _image_grid(images, columns, row_titles, draw, title, path)


def _image_grid(images, columns: dict, row_titles, draw, title: str, path) -> Figure:
    """Rows of ``[input, column 1, ...]``; ``draw(ax, name, map)`` draws one column's tile and returns its title."""
    images = np.asarray(images)
    n = images.shape[0]
    names = ["input", *columns]
    fig, axes = new_figure(n, len(names), figsize=(1.9 * len(names), 1.95 * n + 0.3), squeeze=False)
    for r in range(n):
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "input":
                ax.imshow(_display(minmax(images[r])), cmap="gray", interpolation="nearest")
                ax.set_ylabel(row_titles[r], fontsize=8)
                heading = name
            else:
                heading = draw(ax, name, columns[name][r])
            if r == 0:
                ax.set_title(heading, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return finish(fig, path)
