"""Solutions to the exercises of notebooks/03_linear_layer.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% mse_grad
def mse_grad(pred, target):
    """∂ mean((pred − target)²) / ∂pred, same shape as pred."""
    return 2.0 * (pred - target) / pred.size
