"""Independent reference implementations of every op, with no custom rules.

Each is written from the definition in plain ``jnp`` (indexing, gathers,
scatters, one-hot sums) and differentiated by JAX's own autodiff, so its
gradients share no code with tinyfn's handwritten rules. ``conv2d_lax`` and
``deconv2d_lax`` use XLA's convolution instead; use them for forward checks:
on jax 0.10.2 differentiating ``lax.conv_general_dilated`` aborts the whole
process for some strided configurations (an XLA ``Check failed``), which the
indexing formulations never hit.

Same signatures and semantics as the ops in ``tinyfn.layers`` and
``tinyfn.losses``; they do not validate arguments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tinyfn._checks import int_pair

__all__ = [
    "linear",
    "conv2d",
    "conv2d_lax",
    "deconv2d",
    "deconv2d_lax",
    "max_pool2d",
    "max_pool2d_with_switches",
    "max_unpool2d",
    "relu",
    "softmax",
    "log_softmax",
    "flatten",
    "dropout",
    "softmax_cross_entropy",
    "mse",
]


def linear(x, w, b=None):
    y = jnp.dot(x, w)
    return y if b is None else y + b.reshape((1,) * (y.ndim - 1) + (-1,))


def _window_index(size, kernel, stride, padding, out):
    """``idx[r, i] = r * stride + i - padding``: input coordinate under output ``r``, tap ``i``."""
    return np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] - padding


def _windows(x, kernel, stride, padding, fill):
    """All windows by gathering: ``(N, C, Ho, kh, Wo, kw)``; out-of-range taps read ``fill``."""
    (kh, kw), (sh, sw), (ph, pw) = int_pair("kernel", kernel), int_pair("stride", stride), int_pair("padding", padding)
    n, c, h, w = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xp = jnp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    rows = _window_index(h, kh, sh, 0, ho)  # indices into the padded array
    cols = _window_index(w, kw, sw, 0, wo)
    return xp[:, :, rows[:, :, None, None], cols[None, None, :, :]]


def conv2d(x, w, b=None, *, stride=1, padding=0):
    """Convolution as a sum over gathered windows: ``y[n,k,r,q] = Σ w[k,c,i,j] x_pad[n,c,r s+i,q s+j]``."""
    win = _windows(x, w.shape[2:], stride, padding, 0.0)
    y = jnp.einsum("ncriqj,kcij->nkrq", win, w)
    return y if b is None else y + b[None, :, None, None]


def conv2d_lax(x, w, b=None, *, stride=1, padding=0):
    """Convolution by XLA (``lax.conv_general_dilated``), for forward checks."""
    (ph, pw) = int_pair("padding", padding)
    y = lax.conv_general_dilated(
        x, w, int_pair("stride", stride), [(ph, ph), (pw, pw)], dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    return y if b is None else y + b[None, :, None, None]


def deconv2d(x, w, b=None, *, stride=1, padding=0, output_padding=0):
    """Transposed convolution by scattering: each ``x[n,c,r,q] w[c,o,i,j]`` is added at ``(r s+i-p, q s+j-p)``."""
    (sh, sw), (ph, pw), (oh, ow) = (
        int_pair("stride", stride),
        int_pair("padding", padding),
        int_pair("output_padding", output_padding),
    )
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    hout, wout = (h - 1) * sh - 2 * ph + kh + oh, (wd - 1) * sw - 2 * pw + kw + ow
    contrib = jnp.einsum("ncrq,coij->norqij", x, w)
    rows = (np.arange(h)[:, None] * sh + np.arange(kh)[None, :])[:, None, :, None]  # (h, 1, kh, 1) in padded coords
    cols = (np.arange(wd)[:, None] * sw + np.arange(kw)[None, :])[None, :, None, :]
    full = jnp.zeros((n, o, hout + 2 * ph + kh, wout + 2 * pw + kw), x.dtype)  # room for taps past the end
    full = full.at[:, :, rows, cols].add(contrib)
    y = full[:, :, ph : ph + hout, pw : pw + wout]
    return y if b is None else y + b[None, :, None, None]


def deconv2d_lax(x, w, b=None, *, stride=1, padding=0, output_padding=0):
    """Transposed convolution by XLA (``lax.conv_transpose`` with ``transpose_kernel=True``), for forward checks."""
    (ph, pw), (oh, ow) = int_pair("padding", padding), int_pair("output_padding", output_padding)
    kh, kw = w.shape[2:]
    pads = [(kh - 1 - ph, kh - 1 - ph + oh), (kw - 1 - pw, kw - 1 - pw + ow)]
    y = lax.conv_transpose(
        x, w, int_pair("stride", stride), pads, dimension_numbers=("NCHW", "OIHW", "NCHW"), transpose_kernel=True
    )
    return y if b is None else y + b[None, :, None, None]


def max_pool2d(x, window=2, *, stride=None, padding=0):
    """Max-pooling by XLA's ``reduce_window`` (its autodiff is ``select_and_scatter``)."""
    (kh, kw) = int_pair("window", window)
    (sh, sw) = (kh, kw) if stride is None else int_pair("stride", stride)
    (ph, pw) = int_pair("padding", padding)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, kh, kw), (1, 1, sh, sw), [(0, 0), (0, 0), (ph, ph), (pw, pw)])


def max_pool2d_with_switches(x, window=2, *, stride=None, padding=0):
    """Max-pooling by gathering every window and taking ``argmax`` (first maximum wins)."""
    (kh, kw) = int_pair("window", window)
    stride = (kh, kw) if stride is None else int_pair("stride", stride)
    (sh, sw), (ph, pw) = stride, int_pair("padding", padding)
    n, c, h, w = x.shape
    win = _windows(x, (kh, kw), stride, padding, -jnp.inf)  # (N, C, Ho, kh, Wo, kw)
    ho, wo = win.shape[2], win.shape[4]
    flat = win.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, ho, wo, kh * kw)
    arg = jnp.argmax(flat, axis=-1)
    y = jnp.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    rows = jnp.arange(ho)[None, None, :, None] * sh - ph + arg // kw
    cols = jnp.arange(wo)[None, None, None, :] * sw - pw + arg % kw
    return y, (rows * w + cols).astype(jnp.int32)


def max_unpool2d(y, switches, output_size):
    """Unpooling as a dense one-hot sum: ``z[n,c,p] = Σ_l y[n,c,l] [switches[n,c,l] == p]``."""
    h, w = tuple(output_size)[-2:]
    n, c = y.shape[:2]
    onehot = jax.nn.one_hot(switches.reshape(n, c, -1), h * w, dtype=y.dtype)
    return jnp.einsum("ncl,nclp->ncp", y.reshape(n, c, -1), onehot).reshape(n, c, h, w)


def relu(x):
    return jnp.where(x > 0, x, jnp.zeros((), x.dtype))


def log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - jnp.log(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True))


def softmax(x, axis=-1):
    e = jnp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def flatten(x):
    return x.reshape(x.shape[0], -1)


def dropout(key, x, rate, *, train):
    """Same mask as ``tinyfn.layers.dropout`` for the same key."""
    if not train or rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return keep * x / (1.0 - rate)


def softmax_cross_entropy(logits, labels, label_smoothing=0.0):
    k = logits.shape[-1]
    target = (1 - label_smoothing) * jax.nn.one_hot(labels, k, dtype=logits.dtype) + label_smoothing / k
    return -jnp.mean(jnp.sum(target * log_softmax(logits), axis=-1))


def mse(pred, target):
    return jnp.mean((pred - target) ** 2)


# ---- normalisation, average pooling and fan-in (definitions, differentiated by JAX) ----

__all__ += [
    "batch_norm",
    "batch_norm_with_stats",
    "batch_norm_inference",
    "layer_norm",
    "avg_pool2d",
    "global_avg_pool2d",
    "add_arrays",
    "concat_arrays",
]


def batch_norm(x, gamma=None, beta=None, *, eps=1e-5):
    """``γ (x - μ)/√(σ² + ε) + β`` with the biased statistics over every axis but 1."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = [1 if a in axes else x.shape[a] for a in range(x.ndim)]
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=axes, keepdims=True)
    y = (x - mean) / jnp.sqrt(var + eps)
    y = y if gamma is None else y * gamma.reshape(shape)
    return y if beta is None else y + beta.reshape(shape)


def batch_norm_with_stats(x, gamma=None, beta=None, *, eps=1e-5):
    """``batch_norm``'s output and the batch mean and biased variance it used, each ``(C,)``."""
    axes = (0,) + tuple(range(2, x.ndim))
    return batch_norm(x, gamma, beta, eps=eps), jnp.mean(x, axis=axes), jnp.var(x, axis=axes)


def batch_norm_inference(x, mean, var, gamma=None, beta=None, *, eps=1e-5):
    shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / jnp.sqrt(var.reshape(shape) + eps)
    y = y if gamma is None else y * gamma.reshape(shape)
    return y if beta is None else y + beta.reshape(shape)


def layer_norm(x, gamma=None, beta=None, *, normalized_ndim=1, eps=1e-5):
    """Each sample's trailing ``normalized_ndim`` axes flattened, standardised, then scaled."""
    lead, trailing = x.shape[: x.ndim - normalized_ndim], x.shape[x.ndim - normalized_ndim :]
    rows = x.reshape(-1, int(np.prod(trailing)))
    mean = rows.mean(axis=1, keepdims=True)
    var = ((rows - mean) ** 2).mean(axis=1, keepdims=True)
    y = ((rows - mean) / jnp.sqrt(var + eps)).reshape(*lead, *trailing)
    pad = (1,) * len(lead)
    y = y if gamma is None else y * gamma.reshape(pad + gamma.shape)
    return y if beta is None else y + beta.reshape(pad + beta.shape)


def avg_pool2d(x, window=2, *, stride=None, padding=0, count_include_pad=True):
    """Average of every gathered window; the divisor counts padded taps or not, as PyTorch."""
    window = int_pair("window", window)
    stride = window if stride is None else int_pair("stride", stride)
    win = _windows(x, window, stride, padding, 0.0)  # (N, C, Ho, kh, Wo, kw)
    total = win.sum(axis=(3, 5))
    if count_include_pad:
        return total / (window[0] * window[1])
    inside = _windows(jnp.ones((1, 1, *x.shape[2:]), x.dtype), window, stride, padding, 0.0).sum(axis=(3, 5))
    return total / inside


def global_avg_pool2d(x):
    return x.mean(axis=(2, 3))


def add_arrays(xs):
    return sum(xs[1:], xs[0])


def concat_arrays(xs, axis=1):
    return jnp.concatenate(xs, axis=axis)


# ---- smooth activations, binary cross-entropy, embedding, attention (definitions, differentiated by JAX) ----

__all__ += ["leaky_relu", "sigmoid", "tanh", "silu", "gelu"]
__all__ += ["binary_cross_entropy_with_logits", "embedding", "dot_product_attention"]


def leaky_relu(x, negative_slope=0.01):
    return jnp.where(x > 0, x, negative_slope * x)


def sigmoid(x):
    """``σ(x) = (1 + tanh(x/2)) / 2``: the same function, written another way."""
    return 0.5 * (1 + jnp.tanh(0.5 * x))


def tanh(x):
    return jnp.tanh(x)


def silu(x):
    return x * sigmoid(x)


def gelu(x, approximate=False):
    if approximate in (True, "tanh"):
        return 0.5 * x * (1 + jnp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return x * 0.5 * jax.scipy.special.erfc(-x / np.sqrt(2))  # x Φ(x), Φ(x) = erfc(-x/√2)/2


def binary_cross_entropy_with_logits(logits, targets, pos_weight=None):
    """``-mean(w t log σ(z) + (1 - t) log(1 - σ(z)))`` with ``log σ(z) = -log(1 + e^{-z})``."""
    log_p = -jnp.logaddexp(0.0, -logits)  # log σ(z)
    log_not_p = -jnp.logaddexp(0.0, logits)  # log(1 - σ(z)) = log σ(-z)
    w = 1.0 if pos_weight is None else jnp.broadcast_to(pos_weight, logits.shape)
    return -jnp.mean(w * targets * log_p + (1 - targets) * log_not_p)


def embedding(ids, table):
    """A one-hot matrix times the table: ``y = onehot(ids) table``."""
    return jnp.einsum("...v,vf->...f", jax.nn.one_hot(ids, table.shape[0], dtype=table.dtype), table)


def dot_product_attention(q, k, v, mask=None, causal=False, scale=None):
    """``softmax(s Q Kᵀ + B) V`` with the whole ``T × S`` matrix; a row with no key left gives 0."""
    t, s_len = q.shape[2], k.shape[2]
    logits = jnp.einsum("nhtd,nhsd->nhts", q, k) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    allowed = jnp.ones((1, 1, t, s_len), bool)
    if mask is not None and mask.dtype == jnp.bool_:
        allowed = allowed & jnp.reshape(mask, (1,) * (4 - mask.ndim) + mask.shape)
    elif mask is not None:
        logits = logits + jnp.reshape(mask, (1,) * (4 - mask.ndim) + mask.shape)
    if causal:
        allowed = allowed & jnp.asarray(np.tril(np.ones((t, s_len), bool)))[None, None]
    logits = jnp.where(allowed, logits, -jnp.inf)
    any_key = jnp.isfinite(logits).any(axis=-1, keepdims=True)
    top = jnp.where(any_key, logits.max(axis=-1, keepdims=True), 0.0)
    weights = jnp.where(any_key, jnp.exp(logits - top), 0.0)
    probs = weights / jnp.where(any_key, weights.sum(axis=-1, keepdims=True), 1.0)
    return jnp.einsum("nhts,nhsd->nhtd", probs, v)


# ---- reshape, 1-D convolution, group norm, nearest upsampling (definitions, differentiated by JAX) ----

__all__ += ["reshape", "conv1d", "group_norm", "upsample_nearest2d"]


def reshape(x, shape):
    return jnp.reshape(x, (x.shape[0], *shape))


def conv1d(x, w, b=None, *, stride=1, padding=0, dilation=1):
    """Windows gathered by index, ``(N, C, Lo, K)``, contracted with ``w (O, C, K)``."""
    k = w.shape[2]
    xp = jnp.pad(x, ((0, 0), (0, 0), (padding, padding)))
    lo = (xp.shape[2] - dilation * (k - 1) - 1) // stride + 1
    idx = np.arange(lo)[:, None] * stride + np.arange(k)[None, :] * dilation
    y = jnp.einsum("nclk,ock->nol", xp[:, :, idx], w)
    return y if b is None else y + b[None, :, None]


def group_norm(x, gamma=None, beta=None, *, num_groups, eps=1e-5):
    """Each sample's ``num_groups`` blocks of consecutive channels standardised, then a per-channel affine map."""
    rows = x.reshape(x.shape[0], num_groups, -1)
    mean = rows.mean(axis=2, keepdims=True)
    var = ((rows - mean) ** 2).mean(axis=2, keepdims=True)
    y = ((rows - mean) / jnp.sqrt(var + eps)).reshape(x.shape)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = y if gamma is None else y * gamma.reshape(shape)
    return y if beta is None else y + beta.reshape(shape)


def upsample_nearest2d(x, scale_factor=2):
    """``y[n, c, i, j] = x[n, c, i // sh, j // sw]``: each row, then each column, repeated."""
    sh, sw = int_pair("scale_factor", scale_factor)
    return jnp.repeat(jnp.repeat(x, sh, axis=2), sw, axis=3)
