"""Solutions to the exercises of notebooks/07_optimizers.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% step_decay_numpy
def step_decay_numpy(lr, step_size, gamma=0.1):
    return lambda t: lr * gamma ** (t // step_size)
