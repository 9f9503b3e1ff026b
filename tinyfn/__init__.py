"""tinyfn: a small functional deep-learning library on JAX with handwritten, verified gradients.

Layers are pure ``(init, apply)`` pairs over parameter pytrees (``tinyfn.layers``);
the ops they use carry handwritten ``jax.custom_vjp`` rules, each checked against
autodiff of an independent reference (``tinyfn.reference``) and finite
differences (``tinyfn.gradcheck``).
"""

from tinyfn._malloc import tune_at_import as _tune_at_import

_MALLOC_TUNED = _tune_at_import()  # first, before XLA starts its threads: see tinyfn/_malloc.py

from tinyfn import gradcheck, initializers, layers, losses, models, reference  # noqa: E402
from tinyfn.layers import (  # noqa: E402
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
from tinyfn.losses import mse, softmax_cross_entropy  # noqa: E402
from tinyfn.layers import summary  # noqa: E402

__version__ = "0.1.0"

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
    "__version__",
    "summary",
]
