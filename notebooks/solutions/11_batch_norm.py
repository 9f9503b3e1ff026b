"""Solutions to the exercises of notebooks/11_batch_norm.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% layer_norm_backward
def layer_norm_backward(g, x, gamma, eps=EPS):
    D = x.shape[1]
    mu = x.mean(axis=1, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(axis=1, keepdims=True) + eps)
    x_hat = (x - mu) / sigma
    g_hat = gamma * g                      # γ varies along the row, so it stays inside the sums
    dx = (D * g_hat - g_hat.sum(axis=1, keepdims=True) - x_hat * (g_hat * x_hat).sum(axis=1, keepdims=True)) / (D * sigma)
    return dx, (g * x_hat).sum(axis=0), g.sum(axis=0)
