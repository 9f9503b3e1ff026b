"""Solutions to the exercises of notebooks/12_residual_networks_and_initialisation.ipynb.

Each block, headed `# %% <id>`, replaces the exercise cell with that id."""

# %% backward_signal
def backward_signal(blocks, params, h0, g):
    """([‖δ_0‖, ..., ‖δ_L‖], [‖∂/∂w_1‖, ..., ‖∂/∂w_L‖]) for the cotangent g at the top."""
    pullbacks, h = [], h0
    for block, p in zip(blocks, params):
        h, pullback = jax.vjp(block.apply, p, h)
        pullbacks.append(pullback)
    signal, w_norms = [float(jnp.linalg.norm(g))], []
    for pullback in reversed(pullbacks):
        dp, g = pullback(g)
        signal.append(float(jnp.linalg.norm(g)))
        w_norms.append(float(jnp.linalg.norm(jax.tree_util.tree_leaves(dp)[-1])))  # the block's w
    return signal[::-1], w_norms[::-1]

# %% residual_backward
def residual_block_backward(g, x, w, b):
    """(dx, dw, db) of y = x + relu(x w + b) for the cotangent g."""
    z = x @ w + b
    gz = g * (z > 0)           # through relu: its diagonal Jacobian
    dx = g + gz @ w.T          # the sum sends g down both paths: the identity's share is g itself
    return dx, x.T @ gz, gz.sum(axis=0)  # Law 1 for w; b is added to every row

# %% predicted_second_moment
def predicted_second_moment(m0, gain, depth):
    """[E a_0², E a_1², ..., E a_depth²] through depth Linear–ReLU layers with fan_in · Var(w) = gain."""
    return m0 * (gain / 2.0) ** np.arange(depth + 1)

# %% dropout_rule
def inverted_dropout(x, mask, rate):
    return jnp.where(mask, x / (1.0 - rate), 0.0)


def inverted_dropout_backward(g, mask, rate):
    return jnp.where(mask, g / (1.0 - rate), 0.0)  # Law 1 with the diagonal Jacobian diag(mask) / (1 − rate)
