"""Nearest-neighbour upsampling of ``(N, C, H, W)`` by integer factors, and its handwritten backward rule.

Each input pixel is repeated into an ``sh × sw`` block: ``y[n, c, i, j] = x[n, c, i // sh, j // sw]``. That is a
linear map ``Y = A X`` whose matrix ``A`` has one 1 per row (the pixel each output copies), so the backward is
``Aᵀ g``: each input pixel receives the sum of ``g`` over its block.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from tinyfn import _checks
from tinyfn.layers.base import Layer, parameterless
from tinyfn.layers.spec import register_layer

__all__ = ["upsample_nearest2d", "Upsample"]


def _plain_upsample(x, scale):
    n, c, h, w = x.shape
    sh, sw = scale
    blocks = jnp.broadcast_to(x[:, :, :, None, :, None], (n, c, h, sh, w, sw))
    return blocks.reshape(n, c, h * sh, w * sw)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _upsample(x, scale):
    return _plain_upsample(x, scale)


def _upsample_fwd(x, scale):  # the plain forward, so that forward mode runs through it
    return _plain_upsample(x, scale), None


def _upsample_bwd(scale, res, g):
    n, c, ho, wo = g.shape
    sh, sw = scale
    # Law 1: Y = A X with A the repeat (one 1 per row)  =>  dL/dX = Aᵀ dL/dY, the sum of g over each sh × sw block
    blocks = g.reshape(n, c, ho // sh, sh, wo // sw, sw)
    return (blocks.sum(axis=(3, 5), dtype=jnp.promote_types(g.dtype, jnp.float32)).astype(g.dtype),)


_upsample.defvjp(_upsample_fwd, _upsample_bwd)


def upsample_nearest2d(x, scale_factor=2):
    """Nearest-neighbour upsampling (PyTorch's ``F.interpolate(x, scale_factor, mode="nearest")``, integer factors).

    Args:
      x: ``(N, C, H, W)``.
      scale_factor: an int ``s >= 1`` or a pair ``(sh, sw)``.

    Returns:
      ``(N, C, H·sh, W·sw)``, ``y[n, c, i, j] = x[n, c, i // sh, j // sw]``.

    Backward (handwritten): ``dx[n, c, i, j] = Σ`` of ``g`` over the block ``[i·sh, (i+1)·sh) × [j·sw, (j+1)·sw)``.
    """
    scale = _checks.int_pair("scale_factor", scale_factor, minimum=1, op="upsample_nearest2d")
    x = _checks.float_array("x", x, ndim=4, layout="(N, C, H, W)", op="upsample_nearest2d")
    return _upsample(x, scale)


def Upsample(scale_factor=2) -> Layer:
    """``upsample_nearest2d`` as a layer (no params; ``torch.nn.Upsample(scale_factor, mode="nearest")``)."""
    scale = _checks.int_pair("scale_factor", scale_factor, minimum=1, op="Upsample")

    def shape_fn(shape):
        if len(shape) != 4:
            raise ValueError(f"Upsample: input_shape must have 4 entries (N, C, H, W), got {shape}")
        n, c, h, w = shape
        return (n, c, h * scale[0], w * scale[1])

    return parameterless("Upsample", partial(upsample_nearest2d, scale_factor=scale), shape_fn, scale_factor=scale)


register_layer("Upsample", Upsample)
