"""``python -m tinyfn visualize RUN_DIR_OR_CHECKPOINT``: the figures of a trained model, written as PNGs.

For every built-in model (LeNet-5, the wide CNN, the ResNet, the ViT): each figure's path on stdout as it is
written, a line per stage on stderr (the scans and projections take seconds each), and why a figure was not
written (a layer the DeconvNet cannot pass) at the end.
"""

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
    p.add_argument(
        "--layer",
        default=None,
        help="layer name (conv1, pool2, block3.residual1, ...) or index (default: every conv layer and the last "
        "residual block at each resolution)",
    )
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
    _, notes = make_figures(
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
        show=lambda path: print(path, flush=True),
        log=lambda line: print(f"visualize: {line}", file=sys.stderr, flush=True),
    )
    for note in notes:
        print(note, file=sys.stderr)
    return 0


class _Figures:
    """Where the figures go: ``out``, the paths written so far, the notes, and the two reporting callbacks."""

    def __init__(self, out, show, log):
        self.out, self.paths, self.notes = Path(out), [], []
        self.show, self.log = show or (lambda path: None), log or (lambda line: None)

    def write(self, plot, name, *args, **kwargs) -> Path:
        """Draw with ``plot(*args, path, **kwargs)`` into ``out / name``; report and keep the path."""
        path = self.out / name
        plot(*args, path, **kwargs)
        self.paths.append(path)
        self.show(path)
        return path


def make_figures(
    model,
    params,
    meta,
    *,
    model_state=None,
    data=None,
    layer=None,
    channels=None,
    k=9,
    n_images=4,
    out,
    show=None,
    log=None,
):
    """Write the figures for ``model`` into ``out``; returns ``(paths, notes)``: the figures written, and why any
    was not. ``show(path)`` is called as each figure is written, ``log(line)`` before each stage.

    A stateful model (batch norm) runs in evaluation mode with ``model_state``. For a conv net (LeNet-5, the
    wide CNN, the ResNet): the first conv's filters; for each chosen layer (``layer``, or every top-level conv
    and the last residual block at each resolution) its feature maps of one test image and the DeconvNet grid
    of its top activations; and ``comparison.png``, the predicted class mapped back by DeconvNet, saliency and
    guided backprop. For a transformer: the comparison without the DeconvNet (it cannot pass a GELU),
    ``attention_maps.png`` (the class token's attention in each block) and ``attention_rollout.png``.
    """
    from tinyfn import visualize as V

    images = _test_images(meta, data)
    figures = _Figures(out, show, log)
    table = V.layer_table(model)
    convs = [t for t in table if t.layer.name == "Conv2D"]
    chosen = (
        [V.resolve_layer(model, layer)] if layer is not None else _default_layers(model, params, model_state, images)
    )
    if convs:
        w = np.asarray(convs[0].params(params)["w"])
        figures.log(f"the {w.shape[0]} filters of {convs[0].name}")
        figures.write(
            V.plot_filters,
            f"filters_{convs[0].name}.png",
            w,
            title=f"{convs[0].name}: the {w.shape[0]} learned filters",
        )
    for info in chosen:
        _layer_figures(model, params, info, images, channels=channels, k=k, model_state=model_state, figures=figures)
    _comparison(model, params, images, len(table) - 1, n_images=n_images, model_state=model_state, figures=figures)
    if any(t.layer.name in V.ATTENTION_LAYERS for t in table):
        _attention(model, params, images, n_images=n_images, model_state=model_state, figures=figures)
    return figures.paths, figures.notes


def _default_layers(model, params, model_state, images):
    """Every top-level conv, and each residual block whose output shape the next block changes (or the last)."""
    from tinyfn import visualize as V

    table = V.layer_table(model)
    blocks = [t for t in table if t.layer.name == "residual"]
    if not blocks:
        return [t for t in table if t.layer.name == "Conv2D"]
    rec = V.record(model, params, images[1][:1], upto=blocks[-1].index, model_state=model_state)
    shape = [rec.outputs[t.index].shape for t in blocks]
    last = [t for i, t in enumerate(blocks) if i + 1 == len(blocks) or shape[i + 1] != shape[i]]
    return [t for t in table if t.layer.name == "Conv2D" or t in last]


def _test_images(meta, data):
    """The test split the run's data names (or ``data``), normalised as the run was, and the class names."""
    from tinyfn import data as D

    test = D.load_dataset(data or meta.get("data", "embedded"), "test")
    norm = meta.get("normalization") or {"mean": 0.0, "std": 1.0}
    return test, D.normalize(test.images, norm["mean"], norm["std"]), meta.get("classes") or list(test.classes)


def _layer_figures(model, params, info, images, *, channels, k, model_state, figures):
    """One layer's feature maps of test image 0 and its DeconvNet grid of top activations."""
    from tinyfn import visualize as V

    test, x, classes = images
    rec = V.record(model, params, x[:1], upto=info.index, model_state=model_state)
    act = np.asarray(rec.outputs[-1][0])
    if act.ndim == 3:
        figures.log(f"the {act.shape[0]} feature maps of {info.name}")
        title = f"{info.name}: the {act.shape[0]} feature maps of test image 0 ({classes[int(test.labels[0])]})"
        figures.write(V.plot_feature_maps, f"feature_maps_{info.name}.png", act, title=title, image=test.images[0])
    try:
        V.check_walkable(model, info.index, op="visualize")
    except ValueError as exc:
        figures.notes.append(f"no deconv_{info.name}.png: {exc}")
        return
    maps = list(range(min(8, act.shape[0]))) if channels is None else list(channels)
    figures.log(f"{info.name}: the top {k} of {len(x)} test images for {len(maps)} feature maps, and their projections")
    top = V.top_activations(model, params, x, info.index, maps, k=k, model_state=model_state)
    project = V.make_projector(model, info.index, rule="deconvnet", mode="max", model_state=model_state)
    projections, patches = [], []
    for row, c in enumerate(maps):
        proj = np.asarray(project(params, x[top.images[row]], c))
        boxes = [V.receptive_field(model, (None, *x.shape[1:]), info.index, tuple(pos)) for pos in top.positions[row]]
        projections.append([p[:, r0:r1, c0:c1] for p, (r0, r1, c0, c1) in zip(proj, boxes)])
        patches.append([img[:, r0:r1, c0:c1] for img, (r0, r1, c0, c1) in zip(test.images[top.images[row]], boxes)])
    figures.write(
        V.plot_deconv_grid,
        f"deconv_{info.name}.png",
        projections,
        patches,
        layer=info.name,
        channels=maps,
        image_indices=top.images,
    )


def _picks(model, params, images, n_images, model_state):
    """One test image per class (the first ``n_images`` classes) and the model's prediction for each."""
    from tinyfn.layers import apply_with_state

    test, x, classes = images
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in range(min(n_images, len(classes)))]
    logits = apply_with_state(model, params, model_state or {}, x[picks], train=False)[0]
    return picks, np.asarray(logits).argmax(axis=1)


def _comparison(model, params, images, last, *, n_images, model_state, figures):
    """The three rules side by side (DeconvNet where it applies), for the predicted class of one image per class."""
    from tinyfn import visualize as V

    test, x, classes = images
    picks, predicted = _picks(model, params, images, n_images, model_state)
    rules = {"deconvnet": "deconvnet", "saliency": "saliency", "guided backprop": "guided"}
    try:
        V.check_walkable(model, last, op="visualize")
    except ValueError as exc:
        figures.notes.append(f"comparison.png without the DeconvNet: {exc}")
        del rules["deconvnet"]
    figures.log(f"{', '.join(rules)} of the predicted class for {len(picks)} test images")
    project = {
        name: V.make_projector(model, last, rule=rule, mode="max", model_state=model_state)
        for name, rule in rules.items()
    }
    columns = {
        name: np.stack([np.asarray(p(params, x[i : i + 1], int(c)))[0] for i, c in zip(picks, predicted)])
        for name, p in project.items()
    }
    titles = [f"image {i}: {classes[int(test.labels[i])]} → {classes[int(p)]}" for i, p in zip(picks, predicted)]
    title = "the predicted class score mapped back to pixels"
    figures.write(V.plot_comparison, "comparison.png", test.images[picks], columns, row_titles=titles, title=title)


def _attention(model, params, images, *, n_images, model_state, figures):
    """The class token's attention over the patches in each block, and the attention rollout."""
    from tinyfn import visualize as V

    test, x, classes = images
    picks, predicted = _picks(model, params, images, n_images, model_state)
    figures.log(f"attention maps and rollout for {len(picks)} test images")
    maps = V.attention_maps(model, params, x[picks], model_state=model_state)
    tokens = maps[0].shape[-1]
    side = int(round((tokens - 1) ** 0.5))
    if side * side != tokens - 1:
        figures.notes.append(f"no attention figures: {tokens} tokens are not a class token and a square patch grid")
        return
    grid = lambda p: np.asarray(p)[:, 0, 1:].reshape(len(picks), side, side)  # noqa: E731 - the class token's row
    titles = [f"image {i}: {classes[int(test.labels[i])]} → {classes[int(p)]}" for i, p in zip(picks, predicted)]
    blocks = {f"block {b + 1}": grid(p.mean(axis=1)) for b, p in enumerate(maps)}
    figures.write(
        V.plot_attention,
        "attention_maps.png",
        test.images[picks],
        blocks,
        row_titles=titles,
        title="the class token's attention in each block (heads averaged)",
    )
    rollout = {"rollout": grid(V.attention_rollout(maps))}
    figures.write(
        V.plot_attention,
        "attention_rollout.png",
        test.images[picks],
        rollout,
        row_titles=titles,
        title="attention rollout: what the class token drew on",
    )
