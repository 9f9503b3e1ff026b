"""Solutions to the exercises of notebooks/05_deconvolution_and_unpooling.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% deconv_filter_grad
def deconv_filter_grad(y, g, kh, kw, stride=1):
    """∂ℓ/∂filt for out = deconv2d(y, filt, stride) (one channel, no padding), given g = ∂ℓ/∂out."""
    dfilt = np.zeros((kh, kw), np.float64)
    for r in range(y.shape[0]):
        for q in range(y.shape[1]):
            top, left = stride * r, stride * q
            dfilt += y[r, q] * g[top : top + kh, left : left + kw]  # stamp (r, q) put y[r, q]·filt there
    return dfilt

# %% switches_numpy
def switches_numpy(x, k):
    """(H//k, W//k) flat indices h*W + w of each k×k window's maximum, the first one on ties."""
    H, W = x.shape
    out = np.zeros((H // k, W // k), np.int64)
    for r in range(H // k):
        for q in range(W // k):
            best = -np.inf
            for i in range(k):
                for j in range(k):
                    h, w = r * k + i, q * k + j
                    if x[h, w] > best:  # the bug was >=: a later tie replaced the first maximum
                        best, out[r, q] = x[h, w], h * W + w
    return out

# %% inputs_for_output
def inputs_for_output(m, k, stride, padding):
    """Every input size n >= 1 with floor((n + 2 padding - k) / stride) + 1 == m, sorted."""
    smallest = (m - 1) * stride + k - 2 * padding  # the floor is exact here ...
    return [n for n in range(smallest, smallest + stride) if n >= 1]  # ... and hides up to stride − 1 more
