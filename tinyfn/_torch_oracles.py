"""PyTorch forms of the built-in ops, for ``tinyfn.registry``: same arguments as the reference, ``torch.Tensor`` in.

torch is imported when an oracle is called, never at import (it is an optional dependency).
"""

from __future__ import annotations


def _torch():
    import torch

    return torch


def _f():
    return _torch().nn.functional


def linear(x, w, b=None):
    y = x @ w
    return y if b is None else y + b


def conv2d(x, w, b=None, *, stride=1, padding=0):
    return _f().conv2d(x, w, b, stride=stride, padding=padding)


def deconv2d(x, w, b=None, *, stride=1, padding=0, output_padding=0):
    return _f().conv_transpose2d(x, w, b, stride=stride, padding=padding, output_padding=output_padding)


def max_pool2d(x, window=2, *, stride=None, padding=0):
    return _f().max_pool2d(x, window, stride, padding)


def max_pool2d_with_switches(x, window=2, *, stride=None, padding=0):
    return _f().max_pool2d(x, window, stride, padding, return_indices=True)


def relu(x):
    return _f().relu(x)


def softmax(x, axis=-1):
    return _torch().softmax(x, dim=axis)


def log_softmax(x, axis=-1):
    return _torch().log_softmax(x, dim=axis)


def flatten(x):
    return x.flatten(1)


def softmax_cross_entropy(logits, labels, label_smoothing=0.0):
    return _f().cross_entropy(logits, labels, label_smoothing=label_smoothing)


def mse(pred, target):
    return _f().mse_loss(pred, target)


def batch_norm(x, gamma=None, beta=None, *, eps=1e-5):
    return _f().batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


def batch_norm_with_stats(x, gamma=None, beta=None, *, eps=1e-5):
    dims = (0, *range(2, x.ndim))
    return batch_norm(x, gamma, beta, eps=eps), x.mean(dim=dims), x.var(dim=dims, unbiased=False)


def batch_norm_inference(x, mean, var, gamma=None, beta=None, *, eps=1e-5):
    # F.batch_norm treats the running statistics as buffers (no gradient): the same map written out, torch's autograd
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / _torch().sqrt(var.reshape(shape) + eps)
    y = y if gamma is None else y * gamma.reshape(shape)
    return y if beta is None else y + beta.reshape(shape)


def layer_norm(x, gamma=None, beta=None, *, normalized_ndim=1, eps=1e-5):
    return _f().layer_norm(x, tuple(x.shape[x.ndim - normalized_ndim :]), gamma, beta, eps=eps)


def avg_pool2d(x, window=2, *, stride=None, padding=0, count_include_pad=True):
    return _f().avg_pool2d(x, window, stride, padding, count_include_pad=count_include_pad)


def global_avg_pool2d(x):
    return x.mean(dim=(2, 3))


def add_arrays(xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def concat_arrays(xs, axis=1):
    return _torch().cat(list(xs), dim=axis)


def leaky_relu(x, negative_slope=0.01):
    return _f().leaky_relu(x, negative_slope)


def sigmoid(x):
    return _torch().sigmoid(x)


def tanh(x):
    return _torch().tanh(x)


def silu(x):
    return _f().silu(x)


def gelu(x, approximate=False):
    return _f().gelu(x, approximate="tanh" if approximate else "none")


def binary_cross_entropy_with_logits(logits, targets, pos_weight=None):
    return _f().binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


def embedding(ids, table):
    return _f().embedding(ids.long(), table)


def dot_product_attention(q, k, v, mask=None, causal=False, scale=None):
    return _f().scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)


def take_token(x, index=0):
    return x[:, index]


def reshape(x, shape):
    return x.reshape(x.shape[0], *shape)


def conv1d(x, w, b=None, *, stride=1, padding=0, dilation=1):
    return _f().conv1d(x, w, b, stride=stride, padding=padding, dilation=dilation)


def group_norm(x, gamma=None, beta=None, *, num_groups, eps=1e-5):
    return _f().group_norm(x, num_groups, gamma, beta, eps=eps)


def upsample_nearest2d(x, scale_factor=2):
    scale = scale_factor if isinstance(scale_factor, tuple) else (scale_factor, scale_factor)
    return _f().interpolate(x, scale_factor=tuple(float(s) for s in scale), mode="nearest")
