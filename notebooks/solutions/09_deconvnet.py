"""Solutions to the exercises of notebooks/09_deconvnet.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% seed_top3
def seed_top3(a, channel):
    a = np.asarray(a)
    plane = a[0, channel].ravel()
    keep = np.argsort(-plane, kind="stable")[:3]
    seed = np.zeros_like(a)
    seed[0, channel].flat[keep] = plane[keep]
    return jnp.asarray(seed)
