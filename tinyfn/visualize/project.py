"""Map a chosen activation back to pixel space: DeconvNet, gradient saliency and guided backprop.

All three record the network once (evaluation mode; a stateful model with its
``model_state``) and walk the chosen activation down to the input, layer by
layer, with each layer's transposed map (``tinyfn.visualize.walk``: ``deconv2d``
with a conv's own filters, ``max_unpool2d`` with the recorded switches, batch
norm's per-channel scale, average pooling spread back over its windows, a
residual block's body and shortcut summed). They differ at the activations,
where the signal ``g`` coming down meets the forward input ``x``:

=====================  =========================================  ============================
rule                   ReLU backward                              reference
=====================  =========================================  ============================
``"deconvnet"``        ``relu(g)`` (ignores ``x``)                Zeiler & Fergus, ECCV 2014
``"saliency"``         ``g · [x > 0]`` (the gradient)             Simonyan et al., 2013
``"guided"``           ``g · [x > 0] · [g > 0]``                  Springenberg et al., 2014
=====================  =========================================  ============================

With ``"saliency"`` the walk is exactly the gradient of the selected
activations with respect to the input, and passes every layer (a transformer
block, layer norm: by ``jax.vjp`` of its own apply, the handwritten rules);
``"guided"`` is that gradient gated to ``g > 0`` at every rectifier-like
activation (a GELU: ``g · gelu'(x) · [g > 0]``), so both work on every
built-in model, the vision transformer included. The DeconvNet needs the
transposed maps: a layer without one (GELU, layer norm) is refused by name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tinyfn.visualize.record import LayerInfo, Recording, check_state, layer_table, record, resolve_layer
from tinyfn.visualize.walk import RULES, TRANSPOSED, blocker, step_down

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
]

MODES = ("max", "topk", "all")


def check_walkable(model: Layer, layer: LayerRef, *, op: str = "make_projector", rule: str = "deconvnet"):
    """Refuse, naming it, the first layer up to ``layer`` that the walk down cannot pass.

    The gradient rules (``"saliency"``, ``"guided"``) pass every layer; the DeconvNet
    (``"deconvnet"``) the layers with a transposed map (``walk.TRANSPOSED``) and the
    combinators made of them: a GELU, a layer norm or a transformer block is refused.
    """
    if rule not in RULES:
        raise ValueError(f"{op}: rule must be one of {RULES}, got {rule!r}")
    info = resolve_layer(model, layer)
    for below in layer_table(model)[: info.index + 1]:
        kind = blocker(below.layer, rule)
        if kind is not None:
            raise ValueError(
                f"{op}: cannot project through layer {below.name!r} ({kind}): the DeconvNet walks only "
                f"{', '.join(TRANSPOSED)} and the combinators made of them; choose a layer before it, or use "
                "saliency or guided backprop (feature maps and top activations work for every layer)"
            )


def project_down(
    model: Layer,
    params: Any,
    rec: Recording,
    layer: LayerRef,
    signal: jax.Array,
    rule: str = "deconvnet",
    *,
    model_state=None,
) -> jax.Array:
    """Walk ``signal`` (shaped like ``layer``'s output) down to the input through every layer up to ``layer``.

    Each step is ``walk.step_down``: a layer's transposed map, or its gradient, by ``rule``.
    A stateful model (batch norm) needs the ``model_state`` it was recorded with.
    """
    info = resolve_layer(model, layer)
    check_walkable(model, info.index, op="project_down", rule=rule)
    model_state = check_state(model, model_state, op="project_down")
    g = signal
    for below in reversed(rec.layers[: info.index + 1]):
        i = below.index
        g = step_down(
            below.layer, below.params(params), below.state(model_state), rec.inputs[i], g, rule, rec.switches[i]
        )
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
    gradient) for the others. A stateful model (batch norm) is recorded and
    walked in evaluation mode with ``model_state`` (its running statistics);
    without it, it is refused. A layer the DeconvNet cannot pass (a GELU, a
    transformer block) at or below ``layer`` is refused here, by name.
    """
    model_state = check_state(model, model_state, op="make_projector")
    walk = _walker(model, layer, rule, mode, k, values, op="make_projector")
    return lambda params, x, channel: walk(params, model_state, x, channel)


def _walker(model, layer, rule, mode, k, values, *, op):
    """``(params, model_state, x, channel) -> projection``, the jitted walk behind ``make_projector``."""
    info = resolve_layer(model, layer)
    if rule not in RULES:
        raise ValueError(f"{op}: rule must be one of {RULES}, got {rule!r}")
    if mode not in MODES:
        raise ValueError(f"{op}: mode must be one of {MODES}, got {mode!r}")
    values = rule == "deconvnet" if values is None else values
    check_walkable(model, info.index, op=op, rule=rule)
    counts: dict = {}

    @jax.jit
    def walk(params, model_state, x, channel):
        rec = record(model, params, x, upto=info.index, model_state=model_state)
        seed = select(rec.outputs[info.index], channel, mode, k, values=values)
        return project_down(model, params, rec, info.index, seed, rule, model_state=model_state)

    def project(params, model_state, x, channel):
        shapes = (jnp.shape(x), jnp.result_type(x), tuple(jnp.shape(a) for a in jax.tree_util.tree_leaves(params)))
        if shapes not in counts:
            counts[shapes] = jax.eval_shape(
                lambda p, s, a: record(model, p, a, upto=info.index, model_state=s).outputs[-1], params, model_state, x
            ).shape[1]
        channel = check_channel(channel, counts[shapes], op=op, layer=info.name)
        return _nan_unless_in_range(walk(params, model_state, x, channel), channel, counts[shapes])

    return project


_PROJECTORS: OrderedDict = OrderedDict()  # the walks of deconvnet/saliency/guided_backprop: one compilation per model
_MAX_PROJECTORS = 32


def _projector(model, index, rule, mode, k):
    key = (id(model), index, rule, mode, k)
    hit = _PROJECTORS.get(key)
    if hit is not None and hit[0] is model:
        _PROJECTORS.move_to_end(key)
        return hit[1]
    project = _walker(model, index, rule, mode, k, None, op="make_projector")
    _PROJECTORS[key] = (model, project)  # holding the model keeps its id from being reused
    if len(_PROJECTORS) > _MAX_PROJECTORS:
        _PROJECTORS.popitem(last=False)
    return project


def _project(model, params, x, layer, channel, rule, mode, k, op, model_state):
    x, single = _as_batch(x)
    info = resolve_layer(model, layer)
    model_state = check_state(model, model_state, op=op)
    if mode not in MODES:
        raise ValueError(f"{op}: mode must be one of {MODES}, got {mode!r}")
    try:
        result = _projector(model, info.index, rule, mode, k)(params, model_state, x, channel)
    except (ValueError, TypeError) as exc:
        raise type(exc)(str(exc).replace("make_projector: ", f"{op}: ", 1)) from None
    return result[0] if single else result


def deconvnet(
    model: Layer,
    params: Any,
    x: jax.Array,
    layer: LayerRef,
    channel: Channel,
    *,
    mode: str = "max",
    k: int = 9,
    model_state=None,
) -> jax.Array:
    """Zeiler & Fergus's DeconvNet projection of feature map ``channel`` of ``layer`` into pixel space.

    Keeps only the chosen activations (``mode``: the strongest, the top ``k`` or
    the whole map) with their values, zeroes the rest of the layer, and walks
    down with each layer's transposed map (``walk``): unpool with the switches,
    rectify at each ReLU, ``deconv2d`` with each conv's filters, batch norm's
    scale, average pooling spread back, a residual block's two paths summed.
    ``x`` is ``(C, H, W)`` or ``(N, C, H, W)``; the result has its shape. A
    stateful model needs its ``model_state`` (evaluation mode). Compiles once
    per model, layer and input shape (the walk is cached), whatever the channel.
    """
    return _project(model, params, x, layer, channel, "deconvnet", mode, k, "deconvnet", model_state)


def saliency(
    model: Layer,
    params: Any,
    x: jax.Array,
    target: Channel | None = None,
    *,
    layer: LayerRef | None = None,
    mode: str = "max",
    k: int = 9,
    model_state=None,
) -> jax.Array:
    """Gradient saliency ``∂ a / ∂ x`` (Simonyan et al. 2013), in evaluation mode, for every model.

    ``a`` is by default the class score ``target`` (the model's last layer; the
    predicted class when ``target`` is None), or feature map ``target`` of
    ``layer`` (its strongest unit, ``mode``). A stateful model (batch norm) runs
    with the running statistics of ``model_state`` (``train=False``); without
    it, it is refused. ``x``: ``(C, H, W)`` or ``(N, C, H, W)``, the result has its shape.
    """
    return _gradient_like(model, params, x, target, layer, "saliency", mode, k, model_state)


def guided_backprop(
    model: Layer,
    params: Any,
    x: jax.Array,
    target: Channel | None = None,
    *,
    layer: LayerRef | None = None,
    mode: str = "max",
    k: int = 9,
    model_state=None,
) -> jax.Array:
    """Guided backprop (Springenberg et al. 2014): ``saliency``'s gradient walk, gated at every activation.

    At a ReLU the signal ``g`` coming down passes only where the input was positive
    *and* ``g`` is positive: ``g · [x > 0] · [g > 0]``. A model without ReLUs (a
    vision transformer's GELU) is gated the same way at each rectifier-like
    activation (ReLU, LeakyReLU, GELU, SiLU): ``g · f'(x) · [g > 0]``, the
    gradient through the activation keeping only positive signal; every other
    layer passes the gradient. Arguments as in ``saliency`` (``model_state`` for
    a stateful model; evaluation mode).
    """
    return _gradient_like(model, params, x, target, layer, "guided", mode, k, model_state)


def _gradient_like(model, params, x, target, layer, rule, mode, k, model_state):
    op = "saliency" if rule == "saliency" else "guided_backprop"
    info = resolve_layer(model, len(layer_table(model)) - 1 if layer is None else layer)
    model_state = check_state(model, model_state, op=op)
    xb, single = _as_batch(x)
    if target is None:
        out = record(model, params, xb, upto=info.index, model_state=model_state).outputs[-1]
        if out.ndim != 2 or out.shape[0] != 1:
            raise ValueError(
                f"{op}: target=None (the predicted class) needs one image and a layer with (N, classes) output"
            )
        target = int(jnp.argmax(out[0]))
    out = _project(model, params, xb, info.index, target, rule, mode, k, op, model_state)
    return out[0] if single else out
