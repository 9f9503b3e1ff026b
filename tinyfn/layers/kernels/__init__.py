"""The kernels that evaluate the products inside the convolution and pooling rules.

``conv.py`` and ``pool.py`` hold the handwritten rules (``dX* = W*ᵀ g``,
``dW = g X*ᵀ``, ``dx = Sᵀ g``); this package only *evaluates* each product, by
one of three formulations (``FORMULATIONS``), each a module with the same
functions (``unrolled``, ``conv_forward``, ``conv_input_grad``,
``conv_weight_grad``, ``pool_argmax``), looked up in ``TABLE``:

* ``im2col``: the two laws literally, GEMMs over the unrolled input ``X*``
  (fast on XLA:CPU);
* ``xla``: XLA's own convolution and ``reduce_window`` primitives, no loop
  (cuDNN on a GPU);
* ``direct``: one fused multiply-add per filter tap, for GEMMs that degenerate
  to matrix-vector products.

``choice`` picks the formulation of a call (``plan``, the ``formulation``
context, ``default_formulation``) and records the path each product took
(``record_paths``); ``geometry`` holds the shapes, layouts and taps they share.
Every formulation sums bfloat16 and float16 products in float32 and casts back.
The functions below are the dispatchers: each looks up the plan's formulation
and records, once, the path it took.
"""

from __future__ import annotations

from types import MappingProxyType

from tinyfn.layers.kernels import direct, im2col, pooling, xla
from tinyfn.layers.kernels.choice import (
    CHUNK_BYTES as CHUNK_BYTES,
    FORMULATIONS,
    TUNED_CHUNK_BYTES as TUNED_CHUNK_BYTES,
    Plan,
    check_options as check_options,
    default_chunk_bytes as default_chunk_bytes,
    default_formulation as default_formulation,
    formulation as formulation,
    gemm_degenerates as gemm_degenerates,
    plan as plan,
    record,
    record_paths as record_paths,
)
from tinyfn.layers.kernels.geometry import (
    chwn as chwn,
    code_to_switches as code_to_switches,
    conv_output_size,
    deconv_output_size as deconv_output_size,
    nchw as nchw,
    pool_args as pool_args,
    pool_geometry,
    valid_taps,
)
from tinyfn.layers.kernels.im2col import n_chunks as n_chunks

TABLE = MappingProxyType({"im2col": im2col, "xla": xla, "direct": direct})
"""Each formulation's module, by name; every one has the same functions."""
assert tuple(TABLE) == FORMULATIONS


def unrolled(x, kernel, stride, padding, how: Plan):
    """``X*`` of ``x (N, C, H, W)``: ``(C·kh·kw, Ho·Wo·N)``, rows ``(c, i, j)`` as in ``w.reshape(K, -1)``;
    ``None`` unless ``how`` is ``im2col`` with ``X*`` under its chunk limit (then it is not kept)."""
    return TABLE[how.formulation].unrolled(x, kernel, stride, padding, how)


def conv_forward(x, w, stride, padding, how: Plan, cols=None, *, op="conv2d"):
    """``W X*``: ``y[n,k] = Σ_{c,i,j} w[k,c,i,j] xp[n,c,i+s·r,j+s·q]``; ``cols`` is ``X*`` if known."""
    y, path = TABLE[how.formulation].conv_forward(x, w, stride, padding, how, cols)
    record(op, "W X*", path)
    return y


def conv_input_grad(g, w, stride, padding, in_hw, how: Plan, *, op="conv2d"):
    """``W*ᵀ g``: the transposed convolution of ``g (N, K, Ho, Wo)`` back to ``(N, C, H, W)``."""
    dx, path = TABLE[how.formulation].conv_input_grad(g, w, stride, padding, in_hw, how)
    record(op, "W*ᵀ g", path)
    return dx


def conv_weight_grad(x, g, stride, padding, kernel, how: Plan, cols=None, *, op="conv2d"):
    """``g X*ᵀ``: ``dw[k,c,i,j] = Σ_{n,r,q} g[n,k,r,q] xp[n,c,i+s·r,j+s·q]``; ``cols`` is ``X*`` if known."""
    dw, path = TABLE[how.formulation].conv_weight_grad(x, g, stride, padding, kernel, how, cols)
    record(op, "g X*ᵀ", path)
    return dw


def pool_argmax(x, window, stride, padding, how: Plan, *, op="max_pool2d"):
    """Pooled maxima ``(N, C, Ho, Wo)`` and the window-local tap ``i * kw + j`` of each (int32).

    The first maximum in row-major window order wins; NaN propagates; padded positions never win
    (in an all ``-inf`` window the first real ``-inf`` does).
    """
    out_hw = conv_output_size(x.shape[2:], window, stride, padding)
    real = valid_taps(x.shape[2:], window, stride, padding, out_hw)
    record(op, "argmax", how.formulation)
    return TABLE[how.formulation].pool_argmax(x, window, stride, padding, out_hw, real)


def route_back(g, code, window, stride, padding, in_hw, *, op="max_pool2d"):
    """``Sᵀ g``: each ``g`` to the input position its window's maximum came from (summed where windows
    overlap), the same in every formulation; recorded under the window geometry's name."""
    record(op, "Sᵀ g", pool_geometry(in_hw, window, stride, padding))
    return pooling.route_back(g, code, window, stride, padding, in_hw)
