# %% channel_scale_bug
@jax.custom_vjp
def channel_scale(x, a):
    "(N, C, H, W) times a per-channel (C,) scale."
    return x * a[None, :, None, None]


def _channel_scale_fwd(x, a):
    return x * a[None, :, None, None], (x, a)  # keep the input: da needs x, not y = a·x


def _channel_scale_bwd(res, g):
    x, a = res
    return g * a[None, :, None, None], jnp.sum(g * x, axis=(0, 2, 3))  # the bug: Σ g·y is a times too large


channel_scale.defvjp(_channel_scale_fwd, _channel_scale_bwd)


# %% l2_normalize_rule
def _l2_forward(x):
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


@jax.custom_vjp
def l2_normalize(x):
    "Each row of (N, D) divided by its Euclidean length."
    return _l2_forward(x)


def _l2_fwd(x):
    norm = jnp.linalg.norm(x, axis=1, keepdims=True)
    return x / norm, (x / norm, norm)


def _l2_bwd(res, g):
    # J = (I − y yᵀ) / ‖x‖, symmetric: Law 1 gives Jᵀ g = (g − y (y·g)) / ‖x‖, row by row
    y, norm = res
    return ((g - y * jnp.sum(y * g, axis=1, keepdims=True)) / norm,)


l2_normalize.defvjp(_l2_fwd, _l2_bwd)


# %% hardtanh_rule
@jax.custom_vjp
def hardtanh(x):
    return jnp.clip(x, -1.0, 1.0)


def _hardtanh_fwd(x):
    return jnp.clip(x, -1.0, 1.0), x  # the plain forward, not hardtanh itself: forward over reverse can run


def _hardtanh_bwd(x, g):
    return (jnp.where(jnp.abs(x) < 1.0, g, 0.0),)  # elementwise: g times the derivative


hardtanh.defvjp(_hardtanh_fwd, _hardtanh_bwd)
