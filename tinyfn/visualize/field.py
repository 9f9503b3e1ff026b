"""The receptive field of one unit: the input rows and columns it depends on, through convs, pools and blocks."""

from __future__ import annotations

import weakref

import jax

from tinyfn.visualize.record import layer_table, resolve_layer

__all__ = ["receptive_field"]

_POINTWISE = (
    "ReLU",
    "LeakyReLU",
    "GELU",
    "SiLU",
    "Sigmoid",
    "Tanh",
    "BatchNorm2D",
    "Dropout",
    "Float32",
    "Identity",
)  # each output position depends on the same input position only


_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a layer's init -> {input shape: output shape}


def _out_shape(layer, shape):
    """``layer``'s output shape for ``shape``: its init traced once (nothing drawn), then cached."""
    per_shape = _SHAPES.setdefault(layer.init, {})
    if shape not in per_shape:
        found = []

        def params(key):
            out, p = layer.init(key, shape)
            found.append(tuple(out))
            return p

        jax.eval_shape(params, jax.random.key(0))
        per_shape[shape] = found[0]
    return per_shape[shape]


def _window_back(box, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    r0, r1, c0, c1 = box
    return r0 * sh - ph, (r1 - 1) * sh - ph + kh, c0 * sw - pw, (c1 - 1) * sw - pw + kw


def _box_down(layer, in_shape, box):
    """The half-open box ``(r0, r1, c0, c1)`` of ``layer``'s input that ``box`` of its output depends on,
    clipped to the input; ``None`` when it is the whole input (a linear layer, a global pool, an unknown layer)."""
    kind, cfg = layer.name, layer.config
    if kind == "serial":
        shapes, shape = [], in_shape
        for child in layer.children:
            shapes.append(shape)
            shape = _out_shape(child, shape)
        for child, shape in zip(reversed(layer.children), reversed(shapes)):
            box = _box_down(child, shape, box)
            if box is None:
                return None
        return box
    if kind == "residual":  # the union of the body's field and the shortcut's
        body = _box_down(layer.children[0], in_shape, box)
        short = box if len(layer.children) == 1 else _box_down(layer.children[1], in_shape, box)
        if body is None or short is None:
            return None
        box = (min(body[0], short[0]), max(body[1], short[1]), min(body[2], short[2]), max(body[3], short[3]))
    elif kind in ("Conv2D", "MaxPool2D", "AvgPool2D"):
        kernel = cfg["kernel_size"] if kind == "Conv2D" else cfg["window"]
        box = _window_back(box, kernel, cfg["stride"], cfg["padding"])
    elif kind == "Deconv2D":  # input i feeds outputs i*s - p ... i*s - p + k - 1
        (kh, kw), (sh, sw), (ph, pw) = cfg["kernel_size"], cfg["stride"], cfg["padding"]
        r0, r1, c0, c1 = box
        rows = (-(-(r0 + ph - kh + 1) // sh), (r1 - 1 + ph) // sh + 1)
        box = (*rows, -(-(c0 + pw - kw + 1) // sw), (c1 - 1 + pw) // sw + 1)
    elif kind not in _POINTWISE:
        return None
    h, w = in_shape[-2:]
    return max(box[0], 0), min(box[1], h), max(box[2], 0), min(box[3], w)


def receptive_field(model, input_shape: tuple, layer, position: tuple[int, int]) -> tuple[int, int, int, int]:
    """The input rows and columns ``(r0, r1, c0, c1)`` (half-open, clipped to the image) that unit
    ``position = (h, w)`` of ``layer``'s output depends on.

    Convolutions and pools widen the box by their windows, pointwise layers (activations,
    batch norm, dropout) keep it, a residual block takes the union of its body's and its
    shortcut's fields. Below a linear, flatten or global pooling layer (or any other): the whole image.
    """
    info = resolve_layer(model, layer)
    table = layer_table(model)[: info.index + 1]
    shapes, shape = [], tuple(input_shape)
    for t in table:
        shapes.append(shape)
        shape = _out_shape(t.layer, shape)
    h, w = shapes[0][-2:]
    box = (position[0], position[0] + 1, position[1], position[1] + 1)
    for t, in_shape in zip(reversed(table), reversed(shapes)):
        box = _box_down(t.layer, in_shape, box)
        if box is None:
            return 0, h, 0, w
    return tuple(int(v) for v in box)
