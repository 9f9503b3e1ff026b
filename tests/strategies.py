"""Hypothesis strategies for op configurations, and input builders that avoid kinks."""

import numpy as np
from hypothesis import strategies as st

from tinyfn.layers import conv_output_size, deconv_output_size


@st.composite
def conv_configs(draw, max_channels=4, max_kernel=4, max_stride=3, max_padding=2):
    """``dict(x_shape, w_shape, stride, padding)`` for a valid ``conv2d``."""
    n, c, k = draw(st.integers(1, 2)), draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    padding = (draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding)))
    h = draw(st.integers(max(1, kh - 2 * padding[0]), kh + 5))
    w = draw(st.integers(max(1, kw - 2 * padding[1]), kw + 5))
    return dict(x_shape=(n, c, h, w), w_shape=(k, c, kh, kw), stride=stride, padding=padding)


@st.composite
def deconv_configs(draw, **kwargs):
    """``dict(x_shape, w_shape, stride, padding, output_padding)`` for a valid ``deconv2d``."""
    cfg = draw(conv_configs(**kwargs))
    n, c, h, w = cfg["x_shape"]
    k, _, kh, kw = cfg["w_shape"]
    s, p = cfg["stride"], cfg["padding"]
    op = (draw(st.integers(0, s[0] - 1)), draw(st.integers(0, s[1] - 1)))
    hin = conv_output_size((h, w), (kh, kw), s, p)
    if min(deconv_output_size(hin, (kh, kw), s, p, op)) < 1:
        op = (s[0] - 1, s[1] - 1)
    from hypothesis import assume

    assume(min(deconv_output_size(hin, (kh, kw), s, p, op)) >= 1)
    return dict(x_shape=(n, k, *hin), w_shape=(k, c, kh, kw), stride=s, padding=p, output_padding=op)


@st.composite
def pool_configs(draw):
    """``dict(x_shape, window, stride, padding)`` for a valid ``max_pool2d``."""
    window = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, window[0] // 2)), draw(st.integers(0, window[1] // 2)))
    h, w = draw(st.integers(window[0], window[0] + 5)), draw(st.integers(window[1], window[1] + 5))
    return dict(
        x_shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), window=window, stride=stride, padding=padding
    )


def distinct(rng, shape, gap=0.05, dtype=np.float32):
    """Pairwise at least ``gap`` apart: no max-pool tie can flip under a perturbation of ``eps``."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) - size / 2) * gap).astype(dtype).reshape(shape)


def off_kink(rng, shape, margin=0.1, dtype=np.float32):
    """At least ``margin`` away from 0: no ReLU kink within ``eps``."""
    z = rng.standard_normal(shape)
    return (np.sign(z) * (margin + np.abs(z))).astype(dtype)
