"""tinyfn: a small functional deep-learning library on JAX with handwritten, verified gradients.

Layers are pure ``(init, apply)`` pairs over parameter pytrees (``tinyfn.layers``);
the ops they use carry handwritten ``jax.custom_vjp`` rules, each checked against
autodiff of an independent reference (``tinyfn.reference``) and finite
differences (``tinyfn.gradcheck``).

``import tinyfn`` changes no process-wide setting: the allocator tuning that
training processes want is an explicit call, ``tinyfn.tune_allocator()``, and
plots return ``matplotlib.figure.Figure`` objects without touching the backend.
"""

from tinyfn import gradcheck, initializers, layers, losses, models, reference
from tinyfn._malloc import tune_allocator
from tinyfn._version import __version__
from tinyfn.layers import (
    conv2d,
    deconv2d,
    dropout,
    flatten,
    linear,
    log_softmax,
    max_pool2d,
    max_pool2d_with_switches,
    max_unpool2d,
    relu,
    serial,
    softmax,
)
from tinyfn.losses import mse, softmax_cross_entropy
from tinyfn.layers import summary

__all__ = [
    "gradcheck",
    "initializers",
    "layers",
    "losses",
    "models",
    "reference",
    "serial",
    "linear",
    "conv2d",
    "deconv2d",
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
    "tune_allocator",
    "__version__",
    "summary",
]
