"""One layer of the walk down to pixels: each layer's transposed map (DeconvNet), or its gradient.

``step_down(layer, params, state, x, g, rule)`` carries a signal ``g`` from the
output space of ``layer`` (whose forward input was ``x``) to its input space.
Through a linear map ``y = A x`` every rule sends ``Aᵀ g``; an affine map
``y = A x + b`` drops ``b`` (the DeconvNet uses no bias):

==========================  ==========================================================================
layer                       ``Aᵀ g``
==========================  ==========================================================================
``Conv2D`` / ``Deconv2D``   ``deconv2d(g, W)`` (``W*ᵀ g``) / ``conv2d(g, W)``
``Linear``                  ``g Wᵀ`` (Law 2: ``Y = X W``)
``MaxPool2D``               ``max_unpool2d(g, switches)``: each value back where its window's maximum was
``AvgPool2D``               each ``g / d`` spread evenly over its window (``d`` the divisor), summed where
                            windows overlap
``GlobalAvgPool2D``         ``g / (H W)`` in every position of its plane
``BatchNorm2D/1D`` (eval)   ``a · g``, ``a = γ / √(var + ε)`` per channel (``y = a x + b``: the shift dropped)
``Flatten``, ``Dropout``,   reshape back; the identity (evaluation mode); the cast back
``Float32``
``residual``                ``body-walk(g) + shortcut-walk(g)``: the signal goes down both paths and is
                            summed at the block's input (the identity shortcut passes ``g``)
``Add`` / ``FanOut``        ``g`` to every input / the inputs' signals summed
``Concat``                  ``g`` split back along the concatenated axis
``serial``, ``branch``,     walked into: each child's own step, the children's forward inputs
``parallel``                recomputed from the block's recorded input
==========================  ==========================================================================

The rules differ only at the nonlinearities, where ``g`` meets the forward input ``x``:
``"deconvnet"`` rectifies the signal at a ReLU (``relu(g)``, ignoring ``x``) and passes
no other nonlinearity; ``"saliency"`` takes the gradient everywhere (every other layer,
a transformer block or layer norm, by ``jax.vjp`` of its own apply in evaluation mode);
``"guided"`` is the gradient with the signal gated to its positive part at every
rectifier-like activation (ReLU, LeakyReLU, GELU, SiLU): ``g · f'(x) · [g > 0]``
(Springenberg et al.'s ``g · [x > 0] · [g > 0]`` at a ReLU). A ``TransformerBlock`` is
walked into, so guided backprop gates its GELU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tinyfn.layers import (
    GELU,
    Dropout,
    LayerNorm,
    Linear,
    MultiHeadAttention,
    apply_with_state,
    avg_pool2d,
    conv2d,
    deconv2d,
    deconv_output_size,
    has_state,
    linear,
    max_pool2d_with_switches,
    max_unpool2d,
    relu,
    residual,
    serial,
)

__all__ = ["RULES", "TRANSPOSED", "ACTIVATIONS", "blocker", "step_down", "transformer_block_inner"]

RULES = ("deconvnet", "saliency", "guided")
TRANSPOSED = (
    "Conv2D",
    "Deconv2D",
    "Linear",
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "BatchNorm2D",
    "BatchNorm1D",
    "ReLU",
    "Flatten",
    "Dropout",
    "Float32",
    "Identity",
    "Add",
    "FanOut",
    "Concat",
)  # the layers with a transposed map (the DeconvNet's whole vocabulary)
COMBINATORS = ("serial", "residual", "branch", "parallel")  # walked into, child by child
ACTIVATIONS = ("ReLU", "LeakyReLU", "GELU", "SiLU")  # where guided backprop gates the signal


def blocker(layer, rule: str) -> str | None:
    """The kind of the first layer inside ``layer`` that ``rule`` cannot walk down (``"residual > GELU"``), or None.

    The gradient rules pass every layer; the DeconvNet the transposed maps and the combinators made of them.
    """
    if rule != "deconvnet":
        return None
    if layer.name in COMBINATORS:
        for child in layer.children:
            inner = blocker(child, rule)
            if inner is not None:
                return f"{layer.name} > {inner}"
        return None
    return None if layer.name in TRANSPOSED else layer.name


def _part(tree, key):
    """A child's entry of a combinator's state (``{}`` when the combinator is stateless)."""
    return tree[key] if isinstance(tree, (tuple, list, dict)) and len(tree) else {}


def _eval(layer, params, state, x):
    return apply_with_state(layer, params, state, x, train=False)[0]


def _serial_down(layer, params, state, x, g, rule):
    """Run the children forward from ``x`` (keeping each input and max-pool switches), then walk back."""
    inputs, switches = [], []
    for i, child in enumerate(layer.children):
        inputs.append(x)
        if child.name == "MaxPool2D":
            cfg = child.config
            x, sw = max_pool2d_with_switches(x, cfg["window"], stride=cfg["stride"], padding=cfg["padding"])
        else:
            x, sw = _eval(child, params[i], _part(state, i), x), None
        switches.append(sw)
    for i in reversed(range(len(layer.children))):
        g = step_down(layer.children[i], params[i], _part(state, i), inputs[i], g, rule, switches[i])
    return g


def _combinator_down(layer, params, state, x, g, rule):
    kind, children = layer.name, layer.children
    if kind == "serial":
        return _serial_down(layer, params, state, x, g, rule)
    if kind == "residual":  # y = body(x) + shortcut(x): the signal goes down both paths, summed at x
        down = step_down(children[0], params["body"], _part(state, "body"), x, g, rule)
        if len(children) == 1:
            return down + g  # the identity shortcut
        return down + step_down(children[1], params["shortcut"], _part(state, "shortcut"), x, g, rule)
    if kind == "branch":  # every child saw x: their signals summed at x
        downs = [step_down(c, params[i], _part(state, i), x, g[i], rule) for i, c in enumerate(children)]
        return sum(downs[1:], downs[0])
    # parallel: child i saw x[i]
    return tuple(step_down(c, params[i], _part(state, i), x[i], g[i], rule) for i, c in enumerate(children))


def _batch_norm_scale(layer, params, state, x):
    """``a = γ / √(var + ε)`` shaped to broadcast over ``x``'s channel axis 1."""
    cfg = layer.config
    var = state["var"].astype(x.dtype)
    scale = jax.lax.rsqrt(var + jnp.asarray(cfg["eps"], x.dtype))
    if cfg["affine"]:
        scale = params["gamma"].astype(x.dtype) * scale
    return scale.reshape((1, -1) + (1,) * (x.ndim - 2))


def _linear_down(layer, params, state, x, g, switches):
    """``Aᵀ g`` for the layers of ``TRANSPOSED`` (``None`` for any other layer)."""
    kind, cfg = layer.name, layer.config
    if kind == "Conv2D":  # W*ᵀ g, bias unused
        w = params["w"].astype(g.dtype)
        out_hw = deconv_output_size(g.shape[2:], w.shape[2:], cfg["stride"], cfg["padding"], (0, 0))
        extra = tuple(int(a - b) for a, b in zip(x.shape[2:], out_hw))  # rows the conv's stride skipped
        return deconv2d(g, w, stride=cfg["stride"], padding=cfg["padding"], output_padding=extra)
    if kind == "Deconv2D":  # (W*ᵀ)ᵀ g = W* g
        return conv2d(g, params["w"].astype(g.dtype), stride=cfg["stride"], padding=cfg["padding"])
    if kind == "Linear":  # Law 2: Y = X W  =>  back with Wᵀ
        return linear(g, params["w"].T.astype(g.dtype))
    if kind == "MaxPool2D":
        if switches is None:
            switches = max_pool2d_with_switches(x, cfg["window"], stride=cfg["stride"], padding=cfg["padding"])[1]
        return max_unpool2d(g, switches, x.shape[2:])
    if kind == "AvgPool2D":  # Aᵀ g: avg_pool2d's handwritten backward, each g / d spread over its window
        pool = dict(stride=cfg["stride"], padding=cfg["padding"], count_include_pad=cfg["count_include_pad"])
        return jax.vjp(lambda a: avg_pool2d(a, cfg["window"], **pool), x)[1](g)[0]
    if kind == "GlobalAvgPool2D":
        h, w = x.shape[2:]
        return jnp.broadcast_to((g / (h * w))[:, :, None, None], x.shape).astype(g.dtype)
    if kind in ("BatchNorm2D", "BatchNorm1D"):  # evaluation mode: y = a x + b per channel
        return _batch_norm_scale(layer, params, state, x).astype(g.dtype) * g
    if kind == "Flatten":
        return g.reshape(x.shape)
    if kind == "Float32":
        return g.astype(x.dtype)
    if kind in ("Dropout", "Identity"):
        return g
    if kind == "Add":
        return (g,) * len(x)
    if kind == "FanOut":
        return sum(g[1:], g[0])
    if kind == "Concat":
        axis = cfg["axis"] % g.ndim
        bounds = [sum(a.shape[axis] for a in x[:i]) for i in range(1, len(x))]
        return tuple(jnp.split(g, bounds, axis=axis))
    return None


def step_down(layer, params, state, x, g, rule: str, switches=None):
    """Carry ``g`` from ``layer``'s output space to its input space (forward input ``x``) by ``rule``.

    ``state`` is the layer's part of the model's state (``{}`` for a stateless layer);
    ``switches`` the recorded max-pool switches, recomputed from ``x`` when ``None``.
    """
    kind = layer.name
    if kind == "ReLU" and rule == "deconvnet":
        return relu(g)  # Zeiler & Fergus: rectify the signal coming down, whatever x was
    if kind in COMBINATORS:
        return _combinator_down(layer, params, state, x, g, rule)
    down = _linear_down(layer, params, state, x, g, switches)
    if down is not None:
        return down
    if rule == "deconvnet":
        raise ValueError(
            f"cannot project through layer kind {kind}: only {', '.join(TRANSPOSED)} and the combinators "
            f"{', '.join(COMBINATORS)} have a transposed map"
        )
    if kind == "TransformerBlock" and rule == "guided":  # walk into it to gate its GELU
        return step_down(transformer_block_inner(layer), params, state, x, g, rule)
    grad = jax.vjp(lambda a: _eval(layer, params, state, a), x)[1](g)[0]  # the exact gradient, evaluation mode
    if kind in ACTIVATIONS and rule == "guided":
        return jnp.where(g > 0, grad, jnp.zeros((), grad.dtype))  # g · f'(x) · [g > 0]
    return grad


def transformer_block_inner(layer):
    """The ``serial`` of residual blocks a ``TransformerBlock`` runs, rebuilt from its config (same params tree).

    ``x + MHA(LN(x))``, then ``x + Linear(GELU(Linear(LN(x))))``, with the block's dropout (the identity here).
    """
    if has_state(layer) or layer.name != "TransformerBlock":
        raise ValueError(f"transformer_block_inner: expected a TransformerBlock layer, got {layer.name}")
    c = layer.config
    drop = (Dropout(c["dropout"]),) if c["dropout"] else ()
    hidden = max(1, round(c["mlp_ratio"] * c["embed_dim"]))
    attention = MultiHeadAttention(c["embed_dim"], c["num_heads"], causal=c["causal"], formulation=c["formulation"])
    mlp = (Linear(hidden), GELU(), *drop, Linear(c["embed_dim"]), *drop)
    return serial(residual(serial(LayerNorm(), attention, *drop)), residual(serial(LayerNorm(), *mlp)))
