"""``python -m tinyfn visualize RUN_DIR_OR_CHECKPOINT``: the DeconvNet figures of a trained model, written as PNGs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def add_arguments(p):
    p.add_argument("checkpoint", type=Path, help="a run directory of `python -m tinyfn train` or its .safetensors checkpoint")
    p.add_argument("--data", default=None, help="images to search: 'embedded', 'fashion-mnist' or an IDX directory (default: the run's data; its test split)")
    p.add_argument("--layer", default=None, help="layer name (conv1, pool2, ...) or index (default: every conv layer)")
    p.add_argument("--channels", type=int, nargs="+", default=None, help="feature maps to show (default: the first 8 of each layer)")
    p.add_argument("--k", type=int, default=9, help="top activations per feature map (default 9)")
    p.add_argument("--images", type=int, default=4, help="images in the deconvnet/saliency/guided comparison (default 4)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default RUN_DIR/visualize)")


def run(args) -> int:
    from tinyfn.train import checkpoint_path, load_model

    loaded = load_model(args.checkpoint)  # bad files, layers or channels: main's one-line error
    model, params, meta = loaded
    out = args.out or checkpoint_path(args.checkpoint).parent / "visualize"
    paths, notes = make_figures(
        model, params, meta, model_state=loaded.model_state, data=args.data, layer=args.layer, channels=args.channels,
        k=args.k, n_images=args.images, out=out,
    )  # fmt: skip
    for p in paths:
        print(p)
    for note in notes:
        print(note, file=sys.stderr)
    return 0


def make_figures(model, params, meta, *, model_state=None, data=None, layer=None, channels=None, k=9, n_images=4, out):
    """Write the figures for ``model`` into ``out``; returns ``(paths, notes)``: the figures written, and why any was not.

    A stateful model (batch norm) runs in evaluation mode with ``model_state``. The
    DeconvNet walk passes conv, pool, ReLU, linear, flatten and dropout layers only:
    a conv layer above a batch norm or residual block gets its filters, top
    activations and feature maps, and the projections stop with a note naming the layer.
    """
    import jax

    from tinyfn import data as D
    from tinyfn.visualize import (
        check_walkable,
        guided_backprop,
        layer_table,
        make_projector,
        plot_comparison,
        plot_deconv_grid,
        plot_feature_maps,
        plot_filters,
        receptive_field,
        record,
        resolve_layer,
        saliency,
        top_activations,
    )

    test = D.load_dataset(data or meta.get("data", "embedded"), "test")
    norm = meta.get("normalization") or {"mean": 0.0, "std": 1.0}
    x = D.normalize(test.images, norm["mean"], norm["std"])
    classes = meta.get("classes") or list(test.classes)
    table = layer_table(model)
    convs = [t for t in table if t.layer.name == "Conv2D"]
    chosen = [resolve_layer(model, layer)] if layer is not None else convs
    if not chosen:
        raise ValueError("the model has no Conv2D layer at the top level to visualize; pass --layer")
    out = Path(out)
    paths = []
    if convs:
        w = np.asarray(convs[0].params(params)["w"])
        paths.append(_written(plot_filters, w, out / f"filters_{convs[0].name}.png", title=f"{convs[0].name}: the {w.shape[0]} learned filters"))
    shape = (None, *x.shape[1:])
    notes = []
    for info in chosen:
        rec = record(model, params, x[:1], upto=info.index, model_state=model_state)
        act = np.asarray(rec.outputs[-1][0])
        if act.ndim == 3:
            title = f"{info.name}: the {act.shape[0]} feature maps of test image 0 ({classes[int(test.labels[0])]})"
            paths.append(_written(plot_feature_maps, act, out / f"feature_maps_{info.name}.png", title=title, image=test.images[0]))
        try:
            check_walkable(model, info.index, op="visualize")
        except ValueError as exc:
            notes.append(f"no deconv_{info.name}.png: {exc}")
            continue
        maps = list(range(min(8, act.shape[0]))) if channels is None else list(channels)
        top = top_activations(model, params, x, info.index, maps, k=k, model_state=model_state)
        project = make_projector(model, info.index, rule="deconvnet", mode="max", model_state=model_state)
        projections, patches = [], []
        for row, c in enumerate(maps):
            imgs = x[top.images[row]]
            proj = np.asarray(project(params, imgs, c))
            boxes = [receptive_field(model, shape, info.index, tuple(pos)) for pos in top.positions[row]]
            projections.append([p[:, r0:r1, c0:c1] for p, (r0, r1, c0, c1) in zip(proj, boxes)])
            patches.append([img[:, r0:r1, c0:c1] for img, (r0, r1, c0, c1) in zip(test.images[top.images[row]], boxes)])
        paths.append(_written(plot_deconv_grid, projections, patches, out / f"deconv_{info.name}.png", layer=info.name, channels=maps, image_indices=top.images))
    # the three rules side by side, for the predicted class of one image per class
    last = len(table) - 1
    try:
        check_walkable(model, last, op="visualize")
    except ValueError as exc:
        notes.append(f"no comparison.png: {exc}")
        return paths, notes
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in range(min(n_images, len(classes)))]
    logits = np.asarray(model.apply(params, x[picks]))
    cols = {"deconvnet": [], "saliency": [], "guided backprop": []}
    project_class = make_projector(model, last, rule="deconvnet", mode="max")
    for i, pred in zip(picks, logits.argmax(axis=1)):
        deconv = project_class(params, x[i : i + 1], int(pred))
        cols["deconvnet"].append(np.asarray(deconv)[0])
        cols["saliency"].append(np.asarray(saliency(model, params, x[i], int(pred))))
        cols["guided backprop"].append(np.asarray(guided_backprop(model, params, x[i], int(pred))))
    titles = [f"image {i}: {classes[int(test.labels[i])]} → {classes[int(p)]}" for i, p in zip(picks, logits.argmax(axis=1))]
    paths.append(_written(plot_comparison, test.images[picks], {k_: np.stack(v) for k_, v in cols.items()}, out / "comparison.png", row_titles=titles, title="the predicted class score mapped back to pixels"))
    return paths, notes


def _written(plot, *args, **kwargs) -> Path:
    """Draw with ``plot`` into the PNG path among ``args`` and return that path."""
    path = next(a for a in args if isinstance(a, Path))
    plot(*args, **kwargs)
    return path
