"""Solutions to the exercises of notebooks/04_convolution_as_matrix.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% im2col
def im2col(x, kh, kw):
    """(N, C, H, W) -> (C*kh*kw, N*Ho*Wo), stride 1, no padding."""
    n, c, h, w = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    taps = np.stack([x[:, :, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)], axis=2)  # (N, C, kh*kw, Ho, Wo)
    return taps.transpose(1, 2, 0, 3, 4).reshape(c * kh * kw, n * ho * wo)
