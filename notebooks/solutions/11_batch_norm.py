# %% running_stats_bug
def running_update(state, xb, momentum=0.1):
    "The running {'mean', 'var'} after one training step on the (N, C, H, W) batch xb."
    M = xb.size // xb.shape[1]
    mu, var = xb.mean(axis=AXES), xb.var(axis=AXES) * M / (M - 1)
    keep = 1 - momentum
    # the bug: momentum weighted the old value (Keras' convention); in PyTorch's and tinyfn's it weights the new batch
    return {"mean": keep * state["mean"] + momentum * mu, "var": keep * state["var"] + momentum * var}


# %% fold_batch_norm
def fold_batch_norm(lin, bn, state, eps=EPS):
    # γ (xW + b − μ)/√(v + ε) + β = x (W s) + (b − μ) s + β, with s = γ/√(v + ε) per output feature
    scale = bn["gamma"] / jnp.sqrt(state["var"] + eps)
    return {"w": lin["w"] * scale, "b": (lin["b"] - state["mean"]) * scale + bn["beta"]}


# %% layer_norm_backward
def layer_norm_backward(g, x, gamma, eps=EPS):
    D = x.shape[1]
    mu = x.mean(axis=1, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(axis=1, keepdims=True) + eps)
    x_hat = (x - mu) / sigma
    g_hat = gamma * g                      # γ varies along the row, so it stays inside the sums
    dx = (D * g_hat - g_hat.sum(axis=1, keepdims=True) - x_hat * (g_hat * x_hat).sum(axis=1, keepdims=True)) / (D * sigma)
    return dx, (g * x_hat).sum(axis=0), g.sum(axis=0)
