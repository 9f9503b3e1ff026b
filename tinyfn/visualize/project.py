"""Map a chosen activation back to pixel space: DeconvNet, gradient saliency and guided backprop.

All three walk the recorded network from the chosen layer down to the input,
layer by layer, with the same transposed maps: ``max_unpool2d`` with the
recorded switches through a max-pool, ``deconv2d`` with the conv's own filters
(``W*ᵀ``, bias unused) through a convolution, ``g wᵀ`` through a linear layer.
They differ only at a ReLU, where the signal ``g`` coming down meets the
forward input ``x``:

=====================  ===============================  ============================
rule                   ReLU backward                    reference
=====================  ===============================  ============================
``"deconvnet"``        ``relu(g)`` (ignores ``x``)      Zeiler & Fergus, ECCV 2014
``"saliency"``         ``g · [x > 0]`` (the gradient)   Simonyan et al., 2013
``"guided"``           ``g · [x > 0] · [g > 0]``        Springenberg et al., 2014
=====================  ===============================  ============================

With ``"saliency"`` the walk is exactly the gradient of the selected
activations with respect to the input; it also passes any other layer
without state (a transformer block, layer norm...) by that layer's own
backward (``jax.vjp`` of its ``apply``, the handwritten rules), so it works on
a vision transformer. The other two rules need the transposed maps above.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tinyfn.layers import conv2d, deconv2d, deconv_output_size, has_state, linear, max_unpool2d, relu
from tinyfn.visualize.record import LayerInfo, Recording, check_state, layer_table, record, resolve_layer

if TYPE_CHECKING:
    from tinyfn.layers import Layer

LayerRef = str | int | LayerInfo  # a layer's name ("conv2"), flat index, or table entry
Channel = int | np.integer | jax.Array  # an integer scalar

__all__ = [
    "RULES",
    "MODES",
    "check_walkable",
    "select",
    "check_channel",
    "project_down",
    "deconvnet",
    "saliency",
    "guided_backprop",
    "make_projector",
    "receptive_field",
]

RULES = ("deconvnet", "saliency", "guided")
MODES = ("max", "topk", "all")


def _relu_back(rule, g, x):
    zero = jnp.zeros((), g.dtype)
    if rule == "deconvnet":
        return relu(g)
    if rule == "saliency":
        return jnp.where(x > 0, g, zero)
    return jnp.where((x > 0) & (g > 0), g, zero)


_WALKABLE = ("Conv2D", "Deconv2D", "MaxPool2D", "ReLU", "Linear", "Flatten", "Dropout")


def check_walkable(model: Layer, layer: LayerRef, *, op: str = "make_projector", rule: str = "deconvnet"):
    """Refuse, naming it, the first layer up to ``layer`` that the walk down cannot pass.

    Batch norm, a residual block, layer norm...; with ``rule="saliency"`` only layers with state.
    """
    info = resolve_layer(model, layer)
    for below in layer_table(model)[: info.index + 1]:
        if below.layer.name not in _WALKABLE and not (rule == "saliency" and not has_state(below.layer)):
            raise ValueError(
                f"{op}: cannot project through layer {below.name!r} ({below.layer.name}): only {', '.join(_WALKABLE)} "
                "have a transposed map here; choose a layer before it "
                "(feature maps and top activations work for every layer)"
            )


def _step_down(info: LayerInfo, params, rec: Recording, g, rule: str):
    """Carry the signal ``g`` from layer ``info``'s output space to its input space."""
    layer, cfg, x = info.layer, info.layer.config, rec.inputs[info.index]
    kind = layer.name
    if kind == "Conv2D":
        w = info.params(params)["w"]
        out_hw = deconv_output_size(g.shape[2:], w.shape[2:], cfg["stride"], cfg["padding"], (0, 0))
        extra = tuple(int(a - b) for a, b in zip(x.shape[2:], out_hw))  # rows the conv's stride skipped
        return deconv2d(g, w, stride=cfg["stride"], padding=cfg["padding"], output_padding=extra)  # W*ᵀ g
    if kind == "Deconv2D":
        w = info.params(params)["w"]
        return conv2d(g, w, stride=cfg["stride"], padding=cfg["padding"])  # (W*ᵀ)ᵀ g = W* g
    if kind == "MaxPool2D":
        return max_unpool2d(g, rec.switches[info.index], x.shape[2:])
    if kind == "ReLU":
        return _relu_back(rule, g, x)
    if kind == "Linear":
        return linear(g, info.params(params)["w"].T)  # Law 2: Y = X W  =>  back with Wᵀ
    if kind == "Flatten":
        return g.reshape(x.shape)
    if kind == "Dropout":
        return g  # evaluation mode: the identity
    if rule == "saliency" and not has_state(layer):  # the layer's own backward: the exact gradient through it
        p = info.params(params)
        return jax.vjp(lambda a: layer.apply(p, a), x)[1](g)[0]
    raise ValueError(
        f"cannot project through layer {info.name!r} ({kind}): only Conv2D, Deconv2D, MaxPool2D, ReLU, Linear, "
        "Flatten and Dropout have a transposed map here; choose a layer before it"
    )


def project_down(
    model: Layer, params: Any, rec: Recording, layer: LayerRef, signal: jax.Array, rule: str = "deconvnet"
) -> jax.Array:
    """Walk ``signal`` (shaped like ``layer``'s output) down to the input through every layer up to ``layer``."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    info = resolve_layer(model, layer)
    g = signal
    for below in reversed(rec.layers[: info.index + 1]):
        g = _step_down(below, params, rec, g, rule)
    return g


def select(a: jax.Array, channel: Channel, mode: str = "max", k: int = 9, *, values: bool = True) -> jax.Array:
    """Zero every activation of ``a`` except those chosen in ``channel``, per image.

    ``a`` is ``(N, C, H, W)`` (a feature map) or ``(N, F)`` (units; ``channel``
    is then the unit). ``mode``: ``"max"`` keeps the strongest activation of the
    map, ``"topk"`` its ``k`` strongest, ``"all"`` the whole map. Kept entries
    hold their activation (``values=True``, as in the DeconvNet) or 1 (the
    seed of a gradient). ``channel`` (an int, a numpy integer or an integer
    scalar array) outside ``0..C-1`` raises ``ValueError``; when it is traced
    (under an outer ``jit``) and out of range, the result is all NaN instead.
    """
    if mode not in MODES:
        raise ValueError(f"select: mode must be one of {MODES}, got {mode!r}")
    if a.ndim not in (2, 4):
        raise ValueError(f"select: can only select in (N, C, H, W) or (N, F) activations, got shape {tuple(a.shape)}")
    n, c = a.shape[:2]
    channel = check_channel(channel, c, op="select")
    chosen = lax.dynamic_index_in_dim(a, channel, axis=1, keepdims=False).reshape(n, -1)
    size = chosen.shape[1]
    if mode == "all":
        keep = jnp.ones(chosen.shape, bool)
    else:
        kk = 1 if mode == "max" else min(k, size)
        _, idx = lax.top_k(chosen, kk)  # ties: the lowest index first
        keep = jnp.zeros(chosen.shape, bool).at[jnp.arange(n)[:, None], idx].set(True)
    kept = jnp.where(keep, chosen if values else jnp.ones((), a.dtype), jnp.zeros((), a.dtype))
    onehot = (jnp.arange(c) == channel).astype(a.dtype)
    spatial = a.shape[2:]
    out = (kept.reshape(n, 1, *spatial) * onehot.reshape(1, c, *([1] * len(spatial)))).astype(a.dtype)
    return _nan_unless_in_range(out, channel, c)


def check_channel(channel: Channel, count: int, *, op: str, layer: str | None = None) -> int | jax.Array:
    """``channel`` as a Python int if it is concrete and in ``0..count-1``; a traced integer passes through unchanged.

    Accepts ``int``, numpy integers and integer scalar arrays; refuses ``bool``,
    floats and anything else (``TypeError``) and out-of-range values, negative
    ones included (``ValueError``, naming the layer and its channel count).
    """
    if isinstance(channel, jax.core.Tracer):
        if not jnp.issubdtype(channel.dtype, jnp.integer) or channel.ndim != 0:
            raise TypeError(
                f"{op}: channel must be an integer scalar, got a traced {channel.dtype} of shape {channel.shape}"
            )
        return channel
    is_scalar_int = np.ndim(channel) == 0 and np.issubdtype(np.asarray(channel).dtype, np.integer)
    if isinstance(channel, (bool, np.bool_)) or not is_scalar_int:
        raise TypeError(f"{op}: channel must be an int, got {channel!r}")
    value = int(channel)
    if not 0 <= value < count:
        where = f"layer {layer!r}" if layer is not None else "the activations"
        raise ValueError(
            f"{op}: channel {value} is out of range for {where} with {count} channels/units (expected 0..{count - 1})"
        )
    return value


def _nan_unless_in_range(out, channel, count):
    """``out`` unchanged for a concrete (already checked) channel; all NaN for a traced one outside ``0..count-1``."""
    if not isinstance(channel, jax.core.Tracer):
        return out
    valid = (channel >= 0) & (channel < count)
    return jnp.where(valid, out, jnp.full((), jnp.nan, out.dtype))


def _as_batch(x):
    x = jnp.asarray(x)
    if x.ndim == 3:
        return x[None], True
    if x.ndim == 4:
        return x, False
    raise ValueError(f"x must be one image (C, H, W) or a batch (N, C, H, W), got shape {tuple(x.shape)}")


def make_projector(
    model: Layer,
    layer: LayerRef,
    *,
    rule: str = "deconvnet",
    mode: str = "max",
    k: int = 9,
    values: bool | None = None,
    model_state=None,
) -> Callable[[Any, jax.Array, Channel], jax.Array]:
    """A ``(params, x, channel) -> projection`` for repeated use, compiled once per input shape.

    ``channel`` is passed to the jitted walk as an argument, so every channel
    reuses one compilation. It must be an int (numpy integers and integer
    scalar arrays too) in ``0..C-1`` for the layer's ``C`` channels or units;
    anything else raises before any work. Under an outer ``jit`` (a traced
    ``channel``) an out-of-range channel gives an all-NaN projection, never a
    plausible picture. ``values`` (seed the walk with the kept activations, or
    with ones) defaults to ``True`` for the DeconvNet and ``False`` (a
    gradient) for the others. A stateful model is recorded in evaluation mode
    with ``model_state``; a layer the walk cannot pass (batch norm, a residual
    block) at or below ``layer`` is refused here, by name.
    """
    info = resolve_layer(model, layer)
    model_state = check_state(model, model_state, op="make_projector")
    if rule not in RULES:
        raise ValueError(f"make_projector: rule must be one of {RULES}, got {rule!r}")
    if mode not in MODES:
        raise ValueError(f"make_projector: mode must be one of {MODES}, got {mode!r}")
    values = rule == "deconvnet" if values is None else values
    check_walkable(model, info.index, rule=rule)
    counts: dict = {}

    @jax.jit
    def walk(params, x, channel):
        rec = record(model, params, x, upto=info.index, model_state=model_state)
        seed = select(rec.outputs[info.index], channel, mode, k, values=values)
        return project_down(model, params, rec, info.index, seed, rule)

    def project(params, x, channel):
        shapes = (jnp.shape(x), jnp.result_type(x), tuple(jnp.shape(a) for a in jax.tree_util.tree_leaves(params)))
        if shapes not in counts:
            counts[shapes] = jax.eval_shape(
                lambda p, a: record(model, p, a, upto=info.index, model_state=model_state).outputs[-1], params, x
            ).shape[1]
        channel = check_channel(channel, counts[shapes], op="make_projector", layer=info.name)
        return _nan_unless_in_range(walk(params, x, channel), channel, counts[shapes])

    return project


_PROJECTORS: OrderedDict = (
    OrderedDict()
)  # the projectors of deconvnet/saliency/guided_backprop: one compilation per model
_MAX_PROJECTORS = 32


def _projector(model, index, rule, mode, k):
    key = (id(model), index, rule, mode, k)
    hit = _PROJECTORS.get(key)
    if hit is not None and hit[0] is model:
        _PROJECTORS.move_to_end(key)
        return hit[1]
    project = make_projector(model, index, rule=rule, mode=mode, k=k)
    _PROJECTORS[key] = (model, project)  # holding the model keeps its id from being reused
    if len(_PROJECTORS) > _MAX_PROJECTORS:
        _PROJECTORS.popitem(last=False)
    return project


def _project(model, params, x, layer, channel, rule, mode, k, op):
    x, single = _as_batch(x)
    info = resolve_layer(model, layer)
    if mode not in MODES:
        raise ValueError(f"{op}: mode must be one of {MODES}, got {mode!r}")
    try:
        result = _projector(model, info.index, rule, mode, k)(params, x, channel)
    except (ValueError, TypeError) as exc:
        raise type(exc)(str(exc).replace("make_projector: ", f"{op}: ", 1)) from None
    return result[0] if single else result


def deconvnet(
    model: Layer, params: Any, x: jax.Array, layer: LayerRef, channel: Channel, *, mode: str = "max", k: int = 9
) -> jax.Array:
    """Zeiler & Fergus's DeconvNet projection of feature map ``channel`` of ``layer`` into pixel space.

    Keeps only the chosen activations (``mode``: the strongest, the top ``k`` or
    the whole map) with their values, zeroes the rest of the layer, and walks
    down: unpool with the switches, rectify at each ReLU, ``deconv2d`` with each
    conv's filters. ``x`` is ``(C, H, W)`` or ``(N, C, H, W)``; the result has
    its shape. Compiles once per model, layer and input shape (the projector is
    cached), whatever the channel.
    """
    return _project(model, params, x, layer, channel, "deconvnet", mode, k, "deconvnet")


def saliency(
    model: Layer,
    params: Any,
    x: jax.Array,
    target: Channel | None = None,
    *,
    layer: LayerRef | None = None,
    mode: str = "max",
    k: int = 9,
) -> jax.Array:
    """Gradient saliency: ``∂ a / ∂ x`` for a unit ``a``: by default the class score ``target`` (the model's
    last layer, the predicted class when ``target`` is None); or feature map ``target`` of ``layer``."""
    return _gradient_like(model, params, x, target, layer, "saliency", mode, k)


def guided_backprop(
    model: Layer,
    params: Any,
    x: jax.Array,
    target: Channel | None = None,
    *,
    layer: LayerRef | None = None,
    mode: str = "max",
    k: int = 9,
) -> jax.Array:
    """Guided backprop: the walk of ``saliency`` with ReLUs passing only positive signal where the input was
    positive."""
    return _gradient_like(model, params, x, target, layer, "guided", mode, k)


def _gradient_like(model, params, x, target, layer, rule, mode, k):
    info = resolve_layer(model, len(layer_table(model)) - 1 if layer is None else layer)
    xb, single = _as_batch(x)
    if target is None:
        out = record(model, params, xb, upto=info.index).outputs[-1]
        if out.ndim != 2 or out.shape[0] != 1:
            raise ValueError("target=None (the predicted class) needs one image and a layer with (N, classes) output")
        target = int(jnp.argmax(out[0]))
    out = _project(
        model, params, xb, info.index, target, rule, mode, k, "saliency" if rule == "saliency" else "guided_backprop"
    )
    return out[0] if single else out


def receptive_field(
    model: Layer, input_shape: tuple, layer: LayerRef, position: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The input rows and columns ``(r0, r1, c0, c1)`` (half-open, clipped to the image) that unit
    ``position = (h, w)`` of ``layer``'s output depends on. Below a linear or flatten layer: the whole image."""
    info = resolve_layer(model, layer)
    table = layer_table(model)[: info.index + 1]
    shapes, shape = [], tuple(input_shape)
    for t in table:
        shapes.append(shape)
        shape, _ = t.layer.init(jax.random.key(0), shape)
    h, w = shapes[0][-2:]
    r0, r1, c0, c1 = position[0], position[0] + 1, position[1], position[1] + 1
    for t, in_shape in zip(reversed(table), reversed(shapes)):
        kind, cfg = t.layer.name, t.layer.config
        if kind in ("Linear", "Flatten"):
            return 0, h, 0, w
        if kind in ("Conv2D", "MaxPool2D"):
            (kh, kw) = cfg["kernel_size"] if kind == "Conv2D" else cfg["window"]
            (sh, sw), (ph, pw) = cfg["stride"], cfg["padding"]
            r0, r1 = r0 * sh - ph, (r1 - 1) * sh - ph + kh
            c0, c1 = c0 * sw - pw, (c1 - 1) * sw - pw + kw
        elif kind == "Deconv2D":  # input i feeds outputs i*s - p ... i*s - p + k - 1
            (kh, kw), (sh, sw), (ph, pw) = cfg["kernel_size"], cfg["stride"], cfg["padding"]
            r0, r1 = -(-(r0 + ph - kh + 1) // sh), (r1 - 1 + ph) // sh + 1
            c0, c1 = -(-(c0 + pw - kw + 1) // sw), (c1 - 1 + pw) // sw + 1
        r0, r1, c0, c1 = max(r0, 0), min(r1, in_shape[-2]), max(c0, 0), min(c1, in_shape[-1])
    return int(r0), int(r1), int(c0), int(c1)
