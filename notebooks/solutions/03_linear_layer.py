"""Solutions to the exercises of notebooks/03_linear_layer.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% my_mse
@jax.custom_vjp
def my_mse(pred, target):
    return jnp.mean((pred - target) ** 2)


def _my_mse_fwd(pred, target):
    return my_mse(pred, target), (pred, target)


def _my_mse_bwd(residuals, g):
    pred, target = residuals
    d_pred = g * 2 * (pred - target) / pred.size  # ∂/∂pred of mean((pred − target)²)
    return d_pred, -d_pred  # target enters with a minus sign: the same gradient, negated


my_mse.defvjp(_my_mse_fwd, _my_mse_bwd)

# %% backward_223
def backward_223(x, t, W1, b1, W2, b2):
    """Gradients of mse(relu(x W1 + b1) W2 + b2, t) for a batch x (N, 2): a dict like section 2's by_hand."""
    z = x @ W1 + b1
    h = np.maximum(z, 0.0)
    y_hat = h @ W2 + b2
    dy = 2 * (y_hat - t) / y_hat.size
    dh = dy @ W2.T
    dz = dh * (z > 0)  # the bug was h >= 0, true for every unit: a switched-off unit passed its −0.36 down
    return {"y": dy, "h": dh, "W2": h.T @ dy, "b2": dy.sum(axis=0), "W1": x.T @ dz, "b1": dz.sum(axis=0),
            "x": dz @ W1.T}

# %% dead_columns
def dead_columns(x, W1, b1):
    """(hidden,) bool: True where the column of ∇W1 is zero for every loss, on the batch x."""
    z = x @ W1 + b1
    return np.all(z <= 0, axis=0)  # off for every example of the batch: no example passes a gradient down
