"""tinyfn: a small functional deep-learning library on JAX with handwritten, verified gradients.

Layers are pure ``(init, apply)`` pairs over parameter pytrees (``tinyfn.layers``);
the ops they use carry handwritten ``jax.custom_vjp`` rules, each checked against
autodiff of an independent reference (``tinyfn.reference``) and finite
differences (``tinyfn.gradcheck``).

``import tinyfn`` changes no process-wide setting: the allocator tuning that
training processes want is an explicit call, ``tinyfn.tune_allocator()``, and
plots return ``matplotlib.figure.Figure`` objects without touching the backend.
"""

from tinyfn import _builtin_ops, _builtin_ops_transformer  # noqa: F401  (they register the built-in ops in registry.OPS)
from tinyfn import (
    gradcheck as gradcheck,
)
from tinyfn import (
    initializers as initializers,
)
from tinyfn import (
    layers as layers,
)
from tinyfn import (
    losses as losses,
)
from tinyfn import (
    models as models,
)
from tinyfn import (
    reference as reference,
)
from tinyfn import registry as registry
from tinyfn import testing as testing
from tinyfn._malloc import tune_allocator as tune_allocator
from tinyfn._version import __version__ as __version__
from tinyfn.layers import (
    conv2d as conv2d,
)
from tinyfn.layers import (
    deconv2d as deconv2d,
)
from tinyfn.layers import (
    dropout as dropout,
)
from tinyfn.layers import (
    flatten as flatten,
)
from tinyfn.layers import (
    linear as linear,
)
from tinyfn.layers import (
    log_softmax as log_softmax,
)
from tinyfn.layers import (
    max_pool2d as max_pool2d,
)
from tinyfn.layers import (
    max_pool2d_with_switches as max_pool2d_with_switches,
)
from tinyfn.layers import (
    max_unpool2d as max_unpool2d,
)
from tinyfn.layers import (
    relu as relu,
)
from tinyfn.layers import (
    serial as serial,
)
from tinyfn.layers import (
    softmax as softmax,
)
from tinyfn.layers import summary as summary
from tinyfn.losses import mse as mse
from tinyfn.losses import softmax_cross_entropy as softmax_cross_entropy
