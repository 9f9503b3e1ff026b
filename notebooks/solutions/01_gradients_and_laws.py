"""Solutions to the exercises of notebooks/01_gradients_and_laws.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% central_differences
def central_differences(f, x, eps=1e-6):
    """Gradient of the scalar function f at x (float64 numpy array), same shape as x."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        grad[i] = (f(up) - f(down)) / (2 * eps)
    return grad
