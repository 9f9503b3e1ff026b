"""The seed's matrix form of convolution, for teaching: ``Y* = W* X*``.

Unroll the input plane(s) row by row into a vector ``X*`` and the output into
``Y*``; convolution is then multiplication by the sparse unrolled-filter
matrix ``W*`` of shape ``(K·Ho·Wo, C·H·W)``, and deconvolution multiplication
by ``W*ᵀ``. Building ``W*`` costs memory quadratic in the image size, which is
why ``conv2d`` never does it; these functions exist to show and check the
algebra on small inputs.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from tinyfn import _checks
from tinyfn.layers.conv import conv2d_args, deconv2d_args
from tinyfn.layers.kernels import conv_output_size

__all__ = ["unrolled_filter_matrix", "conv2d_matrix", "deconv2d_matrix"]

MAX_ENTRIES = 50_000_000


def unrolled_filter_matrix(w, input_hw, *, stride=1, padding=0):
    """``W*`` for filters ``w (K, C, kh, kw)`` on ``(C, H, W)`` inputs: shape ``(K·Ho·Wo, C·H·W)``.

    Row ``k·Ho·Wo + r·Wo + q`` holds filter ``k`` placed at output position
    ``(r, q)``; taps that fall in the zero padding are left out. For the
    seed's 3×3 input and 2×2 filter this is its 4×9 matrix.
    """
    op = "unrolled_filter_matrix"
    w = _checks.float_array("w", w, ndim=4, layout="(out_channels, in_channels, kh, kw)", empty_batch=False, op=op)
    h, wd = _checks.int_pair("input_hw", input_hw, minimum=1, op=op)
    (sh, sw), (ph, pw) = (
        _checks.int_pair("stride", stride, minimum=1, op=op),
        _checks.int_pair("padding", padding, minimum=0, op=op),
    )
    k, c, kh, kw = w.shape
    _checks.window_geometry(op, (h, wd), (kh, kw), (sh, sw), (ph, pw))
    ho, wo = conv_output_size((h, wd), (kh, kw), (sh, sw), (ph, pw))
    if k * ho * wo * c * h * wd > MAX_ENTRIES:
        raise ValueError(
            f"unrolled_filter_matrix: W* would have {k * ho * wo} x {c * h * wd} entries, over {MAX_ENTRIES}; "
            "it is a teaching tool for small inputs (use conv2d)"
        )
    kk, r, q, cc, i, j = np.meshgrid(*(np.arange(n) for n in (k, ho, wo, c, kh, kw)), indexing="ij")
    rows_in, cols_in = r * sh - ph + i, q * sw - pw + j
    keep = (rows_in >= 0) & (rows_in < h) & (cols_in >= 0) & (cols_in < wd)
    row = ((kk * ho + r) * wo + q)[keep]
    col = ((cc * h + rows_in) * wd + cols_in)[keep]
    values = w[kk[keep], cc[keep], i[keep], j[keep]]
    return jnp.zeros((k * ho * wo, c * h * wd), w.dtype).at[row, col].set(values)


def conv2d_matrix(x, w, b=None, *, stride=1, padding=0):
    """``conv2d`` computed literally as ``Y* = W* X*`` (plus bias); same result, for teaching."""
    x, w, b, stride, padding = conv2d_args("conv2d_matrix", x, w, b, stride, padding)
    n, c, h, wd = x.shape
    wstar = unrolled_filter_matrix(w, (h, wd), stride=stride, padding=padding)
    ho, wo = conv_output_size((h, wd), w.shape[2:], stride, padding)
    y = (x.reshape(n, c * h * wd) @ wstar.T).reshape(n, w.shape[0], ho, wo)
    return y if b is None else y + b[None, :, None, None]


def deconv2d_matrix(x, w, b=None, *, stride=1, padding=0, output_padding=0):
    """``deconv2d`` computed literally as ``Y* = W*ᵀ X*``; ``w (C_in, C_out, kh, kw)`` as in ``deconv2d``."""
    x, w, b, stride, padding, out_hw = deconv2d_args("deconv2d_matrix", x, w, b, stride, padding, output_padding)
    n, c, h, wd = x.shape
    wstar = unrolled_filter_matrix(w, out_hw, stride=stride, padding=padding)
    y = (x.reshape(n, c * h * wd) @ wstar).reshape(n, w.shape[1], *out_hw)
    return y if b is None else y + b[None, :, None, None]
