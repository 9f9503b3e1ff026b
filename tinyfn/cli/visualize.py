"""``python -m tinyfn visualize RUN_DIR_OR_CHECKPOINT``: the DeconvNet figures of a trained model, written as PNGs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def add_arguments(p):
    p.add_argument(
        "checkpoint", type=Path, help="a run directory of `python -m tinyfn train` or its .safetensors checkpoint"
    )
    p.add_argument(
        "--data",
        default=None,
        help="images to search: 'embedded', 'fashion-mnist' or an IDX directory "
        "(default: the run's data; its test split)",
    )
    p.add_argument("--layer", default=None, help="layer name (conv1, pool2, ...) or index (default: every conv layer)")
    p.add_argument(
        "--channels",
        type=int,
        nargs="+",
        default=None,
        help="feature maps to show (default: the first 8 of each layer)",
    )
    p.add_argument("--k", type=int, default=9, help="top activations per feature map (default 9)")
    p.add_argument(
        "--images", type=int, default=4, help="images in the deconvnet/saliency/guided comparison (default 4)"
    )
    p.add_argument("--out", type=Path, default=None, help="output directory (default RUN_DIR/visualize)")


def run(args) -> int:
    from tinyfn.train import checkpoint_path, load_model

    loaded = load_model(args.checkpoint)  # bad files, layers or channels: main's one-line error
    model, params, meta = loaded
    out = args.out or checkpoint_path(args.checkpoint).parent / "visualize"
    paths, notes = make_figures(
        model,
        params,
        meta,
        model_state=loaded.model_state,
        data=args.data,
        layer=args.layer,
        channels=args.channels,
        k=args.k,
        n_images=args.images,
        out=out,
    )
    for p in paths:
        print(p)
    for note in notes:
        print(note, file=sys.stderr)
    return 0


def make_figures(model, params, meta, *, model_state=None, data=None, layer=None, channels=None, k=9, n_images=4, out):
    """Write the figures for ``model`` into ``out``; returns ``(paths, notes)``: the figures written, and why any
    was not.

    A stateful model (batch norm) runs in evaluation mode with ``model_state``. The
    DeconvNet walk passes conv, pool, ReLU, linear, flatten and dropout layers only:
    a conv layer above a batch norm or residual block gets its filters, top
    activations and feature maps, and the projections stop with a note naming the layer.
    """
    from tinyfn import visualize as V

    test, x, classes = _test_images(meta, data)
    table = V.layer_table(model)
    convs = [t for t in table if t.layer.name == "Conv2D"]
    chosen = [V.resolve_layer(model, layer)] if layer is not None else convs
    if not chosen:
        raise ValueError("the model has no Conv2D layer at the top level to visualize; pass --layer")
    out = Path(out)
    paths, notes = [], []
    if convs:
        w = np.asarray(convs[0].params(params)["w"])
        title = f"{convs[0].name}: the {w.shape[0]} learned filters"
        paths.append(_written(V.plot_filters, w, out / f"filters_{convs[0].name}.png", title=title))
    for info in chosen:
        written, note = _layer_figures(
            model, params, info, (test, x, classes), channels=channels, k=k, model_state=model_state, out=out
        )
        paths += written
        notes += [note] if note else []
    written, note = _comparison(model, params, (test, x, classes), len(table) - 1, n_images=n_images, out=out)
    return paths + written, notes + ([note] if note else [])


def _test_images(meta, data):
    """The test split the run's data names (or ``data``), normalised as the run was, and the class names."""
    from tinyfn import data as D

    test = D.load_dataset(data or meta.get("data", "embedded"), "test")
    norm = meta.get("normalization") or {"mean": 0.0, "std": 1.0}
    return test, D.normalize(test.images, norm["mean"], norm["std"]), meta.get("classes") or list(test.classes)


def _layer_figures(model, params, info, images, *, channels, k, model_state, out):
    """One layer's feature maps of test image 0 and its DeconvNet grid of top activations: ``(paths, note)``."""
    from tinyfn import visualize as V

    test, x, classes = images
    paths = []
    rec = V.record(model, params, x[:1], upto=info.index, model_state=model_state)
    act = np.asarray(rec.outputs[-1][0])
    if act.ndim == 3:
        title = f"{info.name}: the {act.shape[0]} feature maps of test image 0 ({classes[int(test.labels[0])]})"
        paths.append(
            _written(V.plot_feature_maps, act, out / f"feature_maps_{info.name}.png", title=title, image=test.images[0])
        )
    try:
        V.check_walkable(model, info.index, op="visualize")
    except ValueError as exc:
        return paths, f"no deconv_{info.name}.png: {exc}"
    maps = list(range(min(8, act.shape[0]))) if channels is None else list(channels)
    top = V.top_activations(model, params, x, info.index, maps, k=k, model_state=model_state)
    project = V.make_projector(model, info.index, rule="deconvnet", mode="max", model_state=model_state)
    projections, patches = [], []
    for row, c in enumerate(maps):
        proj = np.asarray(project(params, x[top.images[row]], c))
        boxes = [V.receptive_field(model, (None, *x.shape[1:]), info.index, tuple(pos)) for pos in top.positions[row]]
        projections.append([p[:, r0:r1, c0:c1] for p, (r0, r1, c0, c1) in zip(proj, boxes)])
        patches.append([img[:, r0:r1, c0:c1] for img, (r0, r1, c0, c1) in zip(test.images[top.images[row]], boxes)])
    grid = out / f"deconv_{info.name}.png"
    paths.append(
        _written(
            V.plot_deconv_grid, projections, patches, grid, layer=info.name, channels=maps, image_indices=top.images
        )
    )
    return paths, None


def _comparison(model, params, images, last, *, n_images, out):
    """The three rules side by side, for the predicted class of one image per class: ``(paths, note)``."""
    from tinyfn import visualize as V

    test, x, classes = images
    try:
        V.check_walkable(model, last, op="visualize")
    except ValueError as exc:
        return [], f"no comparison.png: {exc}"
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in range(min(n_images, len(classes)))]
    predicted = np.asarray(model.apply(params, x[picks])).argmax(axis=1)
    cols = {"deconvnet": [], "saliency": [], "guided backprop": []}
    project_class = V.make_projector(model, last, rule="deconvnet", mode="max")
    for i, pred in zip(picks, predicted):
        cols["deconvnet"].append(np.asarray(project_class(params, x[i : i + 1], int(pred)))[0])
        cols["saliency"].append(np.asarray(V.saliency(model, params, x[i], int(pred))))
        cols["guided backprop"].append(np.asarray(V.guided_backprop(model, params, x[i], int(pred))))
    titles = [f"image {i}: {classes[int(test.labels[i])]} → {classes[int(p)]}" for i, p in zip(picks, predicted)]
    columns = {name: np.stack(v) for name, v in cols.items()}
    title = "the predicted class score mapped back to pixels"
    return [
        _written(V.plot_comparison, test.images[picks], columns, out / "comparison.png", row_titles=titles, title=title)
    ], None


def _written(plot, *args, **kwargs) -> Path:
    """Draw with ``plot`` into the PNG path among ``args`` and return that path."""
    path = next(a for a in args if isinstance(a, Path))
    plot(*args, **kwargs)
    return path
