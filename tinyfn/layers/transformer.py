"""Multi-head self-attention, patch embedding and the pre-norm transformer block, on tokens ``(N, T, E)``.

Multi-head self-attention (PyTorch's ``nn.MultiheadAttention(E, H, batch_first=True)``, its params stored in PyTorch's
names and layouts, so its weights load as they are)::

    [Q K V] = X W_inᵀ + b_in          (W_in: (3E, E); through ``linear``, the Law 1 / Law 2 rule)
    Q, K, V -> (N, H, T, D)           (D = E / H; a reshape and a transpose per head split)
    O_h = softmax(Q_h K_hᵀ / √D) V_h  (``dot_product_attention``, its handwritten rule)
    Y = concat_h(O_h) W_outᵀ + b_out  (W_out: (E, E); ``linear`` again)

The pre-norm block (Dosovitskiy et al. 2021, as in ViT) composes ``residual``, ``LayerNorm``, ``MultiHeadAttention``,
``Linear`` and ``GELU``::

    x ← x + MHA(LN(x)),    x ← x + W₂ GELU(W₁ LN(x))     (W₁: E → mlp_ratio·E, W₂ back to E)

``PatchEmbedding`` cuts an image into non-overlapping ``p × p`` patches with a strided convolution (one token per
patch), prepends a learned class token and adds learned position embeddings; ``TakeToken(0)`` reads the class token
out for the head.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from tinyfn import _checks, initializers
from tinyfn.layers.attention import ATTENTION_FORMULATIONS, dot_product_attention
from tinyfn.layers.base import Layer, make_layer, serial
from tinyfn.layers.combinators import concat_arrays, residual
from tinyfn.layers.conv import conv2d
from tinyfn.layers.dropout import Dropout
from tinyfn.layers.linear import Linear, linear
from tinyfn.layers.norm import LayerNorm, layer_norm
from tinyfn.layers.pointwise import GELU
from tinyfn.layers.spec import register_layer

_MHA_KEYS = ("in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias")


def _check_mha(op, x, in_proj_weight, in_proj_bias, num_heads):
    x = _checks.float_array("x", x, ndim=3, layout="(N, T, E)", op=op)
    e = x.shape[2]
    num_heads = _checks.positive_int("num_heads", num_heads, op=op)
    if e % num_heads:
        raise ValueError(f"{op}: embed_dim E = {e} (x's last axis) must be divisible by num_heads = {num_heads}")
    w = _checks.float_array("in_proj_weight", in_proj_weight, ndim=2, layout="(3E, E)", empty_batch=False, op=op)
    if w.shape != (3 * e, e):
        raise ValueError(
            f"{op}: in_proj_weight has shape {tuple(w.shape)}, expected (3E, E) = {(3 * e, e)} for x {x.shape}"
        )
    if in_proj_bias is not None and tuple(jnp.shape(in_proj_bias)) != (3 * e,):
        raise ValueError(f"{op}: in_proj_bias has shape {tuple(jnp.shape(in_proj_bias))}, expected (3E,) = ({3 * e},)")
    return x, w, num_heads


def _heads(x, in_proj_weight, in_proj_bias, num_heads):
    """``Q, K, V`` of shape ``(N, H, T, D)`` from ``x (N, T, E)``: one ``linear`` with ``W_inᵀ``, then split."""
    n, t, e = x.shape
    qkv = linear(x, in_proj_weight.T, in_proj_bias)  # (N, T, 3E): PyTorch's y = x Wᵀ + b
    qkv = qkv.reshape(n, t, 3, num_heads, e // num_heads).transpose(2, 0, 3, 1, 4)  # (3, N, H, T, D)
    return qkv[0], qkv[1], qkv[2]


def multi_head_attention(
    x,
    in_proj_weight,
    in_proj_bias=None,
    out_proj_weight=None,
    out_proj_bias=None,
    *,
    num_heads,
    mask=None,
    causal=False,
    formulation=None,
):
    """Multi-head self-attention of ``x`` (``nn.MultiheadAttention(E, H, batch_first=True)(x, x, x)[0]``).

    Args:
      x: ``(N, T, E)`` tokens.
      in_proj_weight: ``(3E, E)``, the rows of ``W_q``, ``W_k``, ``W_v`` stacked (PyTorch's layout).
      in_proj_bias: ``(3E,)`` or ``None``.
      out_proj_weight: ``(E, E)`` (PyTorch's ``out_proj.weight``, ``(out, in)``).
      out_proj_bias: ``(E,)`` or ``None``.
      num_heads: ``H``, dividing ``E``; each head has ``D = E / H`` features and scale ``1/√D``.
      mask: as in ``dot_product_attention``, broadcastable to ``(N, H, T, T)``, ``True`` where the
        key takes part. PyTorch's ``key_padding_mask`` (``True`` = ignore) is ``~kpm[:, None, None, :]``.
      causal: token ``i`` attends to tokens ``j <= i`` only (PyTorch's ``is_causal``).
      formulation: of the attention, one of ``ATTENTION_FORMULATIONS`` (``None``: plain).

    Returns:
      ``(N, T, E)``. Backward (handwritten): ``linear``'s rule for both projections and
      ``dot_product_attention``'s for the heads; the head split and merge are reshapes.
    """
    op = "multi_head_attention"
    x, w_in, num_heads = _check_mha(op, x, in_proj_weight, in_proj_bias, num_heads)
    n, t, e = x.shape
    if out_proj_weight is None or tuple(jnp.shape(out_proj_weight)) != (e, e):
        got = None if out_proj_weight is None else tuple(jnp.shape(out_proj_weight))
        raise ValueError(f"{op}: out_proj_weight has shape {got}, expected (E, E) = {(e, e)}")
    q, k, v = _heads(x, w_in, in_proj_bias, num_heads)
    o = dot_product_attention(q, k, v, mask=mask, causal=causal, formulation=formulation)  # (N, H, T, D)
    o = o.transpose(0, 2, 1, 3).reshape(n, t, e)  # the heads side by side, as PyTorch concatenates them
    return linear(o, jnp.asarray(out_proj_weight).T, out_proj_bias)


def attention_probabilities(x, in_proj_weight, in_proj_bias=None, *, num_heads, mask=None, causal=False):
    """The attention weights ``P = softmax(Q Kᵀ / √D)`` of ``multi_head_attention``: ``(N, H, T, T)``, rows sum to 1.

    PyTorch returns their mean over heads as ``need_weights=True``'s second output. A row whose keys are all masked
    out is 0. For looking at, not for training: its gradient is JAX's autodiff.
    """
    x, w_in, num_heads = _check_mha("attention_probabilities", x, in_proj_weight, in_proj_bias, num_heads)
    q, k, _ = _heads(x, w_in, in_proj_bias, num_heads)
    t = x.shape[1]
    s = jnp.einsum("nhtd,nhsd->nhts", q, k) / math.sqrt(q.shape[3])
    keep = jnp.ones((1, 1, t, t), bool)
    if mask is not None:
        mask = jnp.asarray(mask)
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
        if mask.dtype == jnp.bool_:
            keep = keep & mask
        else:
            s = s + mask.astype(s.dtype)
    if causal:
        keep = keep & jnp.tril(jnp.ones((t, t), bool))[None, None]
    s = jnp.where(keep, s, -jnp.inf)
    top = s.max(axis=-1, keepdims=True)
    e = jnp.exp(s - jnp.where(jnp.isfinite(top), top, jnp.zeros((), s.dtype)))
    total = e.sum(axis=-1, keepdims=True)
    return e / jnp.where(total > 0, total, jnp.ones((), s.dtype))


def params_from_torch(state_dict) -> dict:
    """A PyTorch ``nn.MultiheadAttention``'s ``state_dict()`` as ``MultiHeadAttention`` params (``.`` becomes ``_``)."""
    out = {}
    for name, value in state_dict.items():
        key = name.replace(".", "_")
        if key not in _MHA_KEYS:
            raise ValueError(
                f"params_from_torch: unexpected entry {name!r}; expected those of {_MHA_KEYS} ('.' for '_')"
            )
        out[key] = jnp.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    return out


def _tokens_shape(op, input_shape, embed_dim):
    shape = _checks.input_shape(input_shape, ndim=3, layout="(N, T, E)", op=op)
    if shape[2] != embed_dim:
        raise ValueError(
            f"{op}: input_shape {shape} has E = {shape[2]} features per token, expected embed_dim = {embed_dim}"
        )
    return shape


def _check_formulation(op, formulation):
    if formulation is not None and formulation not in ATTENTION_FORMULATIONS:
        raise ValueError(f"{op}: formulation must be one of {ATTENTION_FORMULATIONS} or None, got {formulation!r}")
    return formulation


def MultiHeadAttention(
    embed_dim: int, num_heads: int, *, bias: bool = True, causal: bool = False, formulation=None
) -> Layer:
    """Multi-head self-attention on ``(N, T, E)`` as a layer (``nn.MultiheadAttention(E, H, batch_first=True)``).

    Params in PyTorch's names and layouts: ``{"in_proj_weight": (3E, E), "in_proj_bias": (3E,), "out_proj_weight": (E,
    E), "out_proj_bias": (E,)}`` (no biases without ``bias``); ``params_from_torch(m.state_dict())`` loads a PyTorch
    module's. Initialised as PyTorch: ``W_in`` Glorot uniform, ``W_out`` uniform in ``±1/√E``, biases 0.

    >>> _, p = MultiHeadAttention(8, 2).init(jax.random.key(0), (None, 5, 8))
    >>> {k: v.shape for k, v in p.items()}
    {'in_proj_weight': (24, 8), 'in_proj_bias': (24,), 'out_proj_weight': (8, 8), 'out_proj_bias': (8,)}
    """
    op = "MultiHeadAttention"
    embed_dim = _checks.positive_int("embed_dim", embed_dim, op=op)
    num_heads = _checks.positive_int("num_heads", num_heads, op=op)
    if embed_dim % num_heads:
        raise ValueError(f"{op}: embed_dim = {embed_dim} must be divisible by num_heads = {num_heads}")
    if not isinstance(causal, bool) or not isinstance(bias, bool):
        raise TypeError(f"{op}: causal and bias must be True or False, got causal={causal!r}, bias={bias!r}")
    formulation = _check_formulation(op, formulation)

    def init(key, input_shape):
        shape = _tokens_shape(op, input_shape, embed_dim)
        k_in, k_out = jax.random.split(key)
        e = embed_dim
        bound = 1 / math.sqrt(e)
        params = {"in_proj_weight": initializers.glorot_uniform(k_in, (3 * e, e), e, 3 * e)}
        if bias:
            params["in_proj_bias"] = jnp.zeros((3 * e,), jnp.float32)
        params["out_proj_weight"] = jax.random.uniform(k_out, (e, e), jnp.float32, -bound, bound)
        if bias:
            params["out_proj_bias"] = jnp.zeros((e,), jnp.float32)
        return shape, params

    def apply(params, x, *, key=None, train=False):
        del key, train
        _tokens_shape(op, jnp.shape(x), embed_dim)
        p = params
        return multi_head_attention(
            x,
            p["in_proj_weight"],
            p.get("in_proj_bias"),
            p["out_proj_weight"],
            p.get("out_proj_bias"),
            num_heads=num_heads,
            causal=causal,
            formulation=formulation,
        )

    config = {
        "embed_dim": embed_dim,
        "num_heads": num_heads,
        "bias": bias,
        "causal": causal,
        "formulation": formulation,
    }
    return make_layer(op, init, apply, config=config)


def PatchEmbedding(patch: int, embed_dim: int, *, cls_token: bool = True) -> Layer:
    """Images ``(N, C, H, W)`` to tokens ``(N, T, E)``: one per ``patch × patch`` patch, a class token first.

    ``tokens = conv2d(x, w, b, stride=patch)`` flattened to ``(N, h·w, E)`` (row-major patches), then ``[cls; tokens]
    + pos``. Params ``{"w": (E, C, p, p), "b": (E,), "cls": (1, 1, E), "pos": (1, T, E)}`` with ``T = (H/p)(W/p) + 1``
    (no ``cls``, and one token fewer, without ``cls_token``); ``w`` LeCun normal, ``cls`` 0, ``pos`` ``N(0, 0.02²)``.
    ``H`` and ``W`` must be multiples of ``patch``. Backward: ``conv2d``'s and ``concat``'s handwritten rules.
    """
    op = "PatchEmbedding"
    patch = _checks.positive_int("patch", patch, op=op)
    embed_dim = _checks.positive_int("embed_dim", embed_dim, op=op)

    def init(key, input_shape):
        n, c, h, w = _checks.input_shape(input_shape, ndim=4, layout="(N, C, H, W)", op=op)
        if h % patch or w % patch:
            raise ValueError(
                f"{op}: the image is {h}x{w} (input_shape {tuple(input_shape)}), not a multiple of patch = {patch}"
            )
        t = (h // patch) * (w // patch) + int(cls_token)
        k_w, k_pos = jax.random.split(key)
        fan_in = c * patch * patch
        params = {
            "w": initializers.lecun_normal(k_w, (embed_dim, c, patch, patch), fan_in, embed_dim),
            "b": jnp.zeros((embed_dim,)),
        }
        if cls_token:
            params["cls"] = jnp.zeros((1, 1, embed_dim), jnp.float32)
        params["pos"] = 0.02 * jax.random.normal(k_pos, (1, t, embed_dim), jnp.float32)
        return (n, t, embed_dim), params

    def apply(params, x, *, key=None, train=False):
        del key, train
        y = conv2d(x, params["w"].astype(x.dtype), params["b"].astype(x.dtype), stride=patch)  # (N, E, h, w)
        n = y.shape[0]
        tokens = y.reshape(n, embed_dim, -1).transpose(0, 2, 1)  # (N, h·w, E)
        if cls_token:
            cls = jnp.broadcast_to(params["cls"].astype(x.dtype), (n, 1, embed_dim))
            tokens = concat_arrays((cls, tokens), axis=1)
        return tokens + params["pos"].astype(x.dtype)

    return make_layer(op, init, apply, config={"patch": patch, "embed_dim": embed_dim, "cls_token": cls_token})


def PositionEmbedding() -> Layer:
    """Learned position embeddings: ``(N, T, E) -> x + pos``, params ``{"pos": (1, T, E)}`` from ``N(0, 0.02²)``.

    For token sequences (after ``Embedding``); ``PatchEmbedding`` carries its own.
    """

    def init(key, input_shape):
        n, t, e = _checks.input_shape(input_shape, ndim=3, layout="(N, T, E)", op="PositionEmbedding")
        return (n, t, e), {"pos": 0.02 * jax.random.normal(key, (1, t, e), jnp.float32)}

    def apply(params, x, *, key=None, train=False):
        return x + params["pos"].astype(x.dtype)

    return make_layer("PositionEmbedding", init, apply, config={})


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _take(x, index):
    return x[:, index]


def _take_fwd(x, index):
    return x[:, index], x.shape


def _take_bwd(index, shape, g):
    # Law 1: y = S x with S the selection of token `index`  =>  dx = Sᵀ g, g in that token's row, 0 elsewhere
    return (jnp.zeros(shape, g.dtype).at[:, index].set(g),)


_take.defvjp(_take_fwd, _take_bwd)


def take_token(x, index: int = 0):
    """Token ``index`` of every sequence: ``(N, T, E) -> (N, E)``. Backward (handwritten): ``g`` into its row."""
    x = _checks.float_array("x", x, ndim=3, layout="(N, T, E)", op="take_token")
    if isinstance(index, bool) or not isinstance(index, int) or not -x.shape[1] <= index < x.shape[1]:
        raise ValueError(f"take_token: index must be an int in [-T, T) for T = {x.shape[1]} tokens, got {index!r}")
    return _take(x, index % x.shape[1])


def TakeToken(index: int = 0) -> Layer:
    """``take_token`` as a layer (no params): ``TakeToken(0)`` reads the class token out of ``(N, T, E)``."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"TakeToken: index must be an int, got {index!r}")

    def init(key, input_shape):
        n, t, e = _checks.input_shape(input_shape, ndim=3, layout="(N, T, E)", op="TakeToken")
        if not -t <= index < t:
            raise ValueError(
                f"TakeToken: index {index} is out of range for {t} tokens (input_shape {tuple(input_shape)})"
            )
        return (n, e), {}

    def apply(params, x, *, key=None, train=False):
        return take_token(x, index)

    return make_layer("TakeToken", init, apply, config={"index": index})


def TransformerBlock(
    embed_dim: int,
    num_heads: int,
    mlp_ratio: float = 4,
    dropout: float = 0.0,
    *,
    causal: bool = False,
    formulation=None,
) -> Layer:
    """The pre-norm transformer block on ``(N, T, E)``: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``.

    ``MLP = Linear(mlp_ratio·E) - GELU - Linear(E)`` (Glorot uniform weights), with ``Dropout(dropout)`` after the
    attention, the GELU and the MLP when ``dropout > 0``. Built as ``serial(residual(serial(LayerNorm(),
    MultiHeadAttention(...))), residual(serial(LayerNorm(), ...)))``; params are that tree: ``params[0]["body"]`` =
    (LayerNorm's, MultiHeadAttention's), ``params[1]["body"]`` = (LayerNorm's, Linear's, {}, Linear's). ``causal`` and
    ``formulation`` go to the attention.
    """
    op = "TransformerBlock"
    embed_dim = _checks.positive_int("embed_dim", embed_dim, op=op)
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
        raise ValueError(f"{op}: mlp_ratio must be a positive number, got {mlp_ratio!r}")
    hidden = max(1, round(mlp_ratio * embed_dim))
    drop = (Dropout(dropout),) if dropout else ()
    attention = MultiHeadAttention(embed_dim, num_heads, causal=causal, formulation=formulation)
    mlp = (Linear(hidden, w_init="glorot_uniform"), GELU(), *drop, Linear(embed_dim, w_init="glorot_uniform"), *drop)
    inner = serial(residual(serial(LayerNorm(), attention, *drop)), residual(serial(LayerNorm(), *mlp)))

    def init(key, input_shape):
        _tokens_shape(op, input_shape, embed_dim)
        return inner.init(key, input_shape)

    def apply(params, x, *, key=None, train=False):
        _tokens_shape(op, jnp.shape(x), embed_dim)  # x itself, named, before the children see it
        return inner.apply(params, x, key=key, train=train)

    config = {
        "embed_dim": embed_dim,
        "num_heads": num_heads,
        "mlp_ratio": mlp_ratio,
        "dropout": dropout,
        "causal": causal,
        "formulation": formulation,
    }
    return make_layer(op, init, apply, config=config)


def block_attention_probabilities(layer: Layer, params, x):
    """``(N, H, T, T)`` attention weights of a ``MultiHeadAttention`` or ``TransformerBlock`` layer on its input."""
    if layer.name == "TransformerBlock":
        ln, params = params[0]["body"][0], params[0]["body"][1]
        x = layer_norm(x, ln.get("gamma"), ln.get("beta"))
    elif layer.name != "MultiHeadAttention":
        raise ValueError(
            f"attention probabilities: expected a MultiHeadAttention or TransformerBlock layer, got {layer.name}"
        )
    cfg = layer.config
    return attention_probabilities(
        x, params["in_proj_weight"], params.get("in_proj_bias"), num_heads=cfg["num_heads"], causal=cfg["causal"]
    )


for _constructor in (MultiHeadAttention, PatchEmbedding, PositionEmbedding, TransformerBlock, TakeToken):
    register_layer(_constructor.__name__, _constructor)
