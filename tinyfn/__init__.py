"""tinyfn: a small functional deep-learning library on JAX with handwritten, verified gradients.

Layers are pure ``(init, apply)`` pairs over parameter pytrees (``tinyfn.layers``);
the ops they use carry handwritten ``jax.custom_vjp`` rules, each checked against
autodiff of an independent reference (``tinyfn.reference``) and finite
differences (``tinyfn.gradcheck``).

``import tinyfn`` changes no process-wide setting: the allocator tuning that
training processes want is an explicit call, ``tinyfn.tune_allocator()``, and
plots return ``matplotlib.figure.Figure`` objects without touching the backend.
"""

from tinyfn import (  # noqa: F401  (they register the built-in ops in registry.OPS)
    _builtin_ops,
    _builtin_ops_layers,
    _builtin_ops_transformer,
    gradcheck as gradcheck,
    initializers as initializers,
    layers as layers,
    losses as losses,
    models as models,
    reference as reference,
    registry as registry,
    testing as testing,
)
from tinyfn._malloc import tune_allocator as tune_allocator
from tinyfn._version import __version__ as __version__
from tinyfn.layers import (
    conv2d as conv2d,
    deconv2d as deconv2d,
    dropout as dropout,
    flatten as flatten,
    linear as linear,
    log_softmax as log_softmax,
    max_pool2d as max_pool2d,
    max_pool2d_with_switches as max_pool2d_with_switches,
    max_unpool2d as max_unpool2d,
    relu as relu,
    serial as serial,
    softmax as softmax,
    summary as summary,
)
from tinyfn.losses import mse as mse, softmax_cross_entropy as softmax_cross_entropy
