"""Solutions to the exercises of notebooks/10_write_your_own_layer.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% hardtanh
@jax.custom_vjp
def hardtanh(x):
    return jnp.clip(x, -1.0, 1.0)


def _hardtanh_fwd(x):
    return hardtanh(x), x


def _hardtanh_bwd(x, g):
    return (jnp.where(jnp.abs(x) < 1.0, g, 0.0),)  # elementwise: g times the derivative


hardtanh.defvjp(_hardtanh_fwd, _hardtanh_bwd)
