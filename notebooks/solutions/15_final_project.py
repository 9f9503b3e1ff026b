"""Solutions to the exercises of notebooks/15_final_project.ipynb.

Each block, headed `# %% <id>`, replaces the exercise cell with that id."""

# %% softplus_forward
def softplus_forward(x):
    return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))  # e^{-|x|} <= 1: nothing overflows

# %% softplus_rule
@jax.custom_vjp
def _softplus(x):
    return softplus_forward(x)


def _softplus_fwd(x):
    return softplus_forward(x), x  # the plain forward, and x for the backward


def _softplus_bwd(x, g):
    return (g * jax.nn.sigmoid(x),)  # Law 1 with the diagonal Jacobian diag(σ(x))


_softplus.defvjp(_softplus_fwd, _softplus_bwd)


def softplus(x):
    """log(1 + e^x) entrywise; backward (handwritten): g · sigmoid(x)."""
    if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"softplus: x must be a floating array, got {getattr(x, 'dtype', type(x).__name__)}")
    return _softplus(x)

# %% softplus_spec
def softplus_spec():
    """The registry entry of softplus."""
    return registry.OpSpec(
        "softplus",
        softplus,
        reference=lambda x: jnp.logaddexp(x, 0.0),
        sample=lambda rng, dtype: registry.Sample((registry.normal(rng, (3, 4), dtype),), config="x(3, 4)"),
        argnames=("x",),
        diff_argnums=(0,),
        torch=None if torch is None else torch.nn.functional.softplus,
        batch_argnums=(0,),
        doc="log(1 + e^x), backward g · sigmoid(x)",
    )

# %% softplus_layer
def Softplus():
    """softplus as a layer without parameters."""
    return L.parameterless("Softplus", softplus)
