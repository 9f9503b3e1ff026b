"""Solutions to the exercises of notebooks/05_deconvolution_and_unpooling.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% deconv_by_stamps
def deconv_by_stamps(y, filt, stride=1):
    (h, w), (kh, kw) = y.shape, filt.shape
    out = np.zeros(((h - 1) * stride + kh, (w - 1) * stride + kw), np.float32)
    for r in range(h):
        for q in range(w):
            out[r * stride:r * stride + kh, q * stride:q * stride + kw] += y[r, q] * filt
    return out
