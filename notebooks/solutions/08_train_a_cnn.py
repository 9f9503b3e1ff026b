"""Solutions to the exercises of notebooks/08_train_a_cnn.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% per_class_accuracy
def per_class_accuracy(m):
    return np.diag(m) / m.sum(axis=1)
