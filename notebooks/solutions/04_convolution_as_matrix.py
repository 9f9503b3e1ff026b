"""Solutions to the exercises of notebooks/04_convolution_as_matrix.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% im2col
def im2col(x, kh, kw):
    """(N, C, H, W) -> (C*kh*kw, N*Ho*Wo), stride 1, no padding."""
    n, c, h, w = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    # (N, C, kh*kw, Ho, Wo): one shifted slice per tap
    taps = np.stack([x[:, :, i : i + ho, j : j + wo] for i in range(kh) for j in range(kw)], axis=2)
    return taps.transpose(1, 2, 0, 3, 4).reshape(c * kh * kw, n * ho * wo)

# %% conv_backward_loops
def conv_backward_loops(x, filt, g, stride=1):
    """(dx, dfilt) of a one-channel convolution without padding, given the output gradient g."""
    kh, kw = filt.shape
    dx, dfilt = np.zeros_like(x), np.zeros_like(filt)
    for r in range(g.shape[0]):
        for q in range(g.shape[1]):
            top, left = stride * r, stride * q
            dx[top : top + kh, left : left + kw] += g[r, q] * filt  # a stamp of the filter (Law 1)
            dfilt += g[r, q] * x[top : top + kh, left : left + kw]  # the patch, summed over positions
    return dx, dfilt

# %% unroll_filter
def unroll_filter(filt, hw):
    """W* of shape (Ho*Wo, H*W): row r*Wo + q holds the filter at output (r, q), in pixel columns i*W + j."""
    (H, W), (kh, kw) = hw, filt.shape
    Ho, Wo = H - kh + 1, W - kw + 1
    M = np.zeros((Ho * Wo, H * W), np.float32)
    for r in range(Ho):
        for q in range(Wo):
            for i in range(kh):
                for j in range(kw):
                    M[r * Wo + q, (r + i) * W + (q + j)] = filt[i, j]  # a pixel row is W long, not H
    return M
