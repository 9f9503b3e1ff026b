"""Solutions to the exercises of notebooks/13_the_cost_of_a_convolution.ipynb.

Each block, headed `# %% <id>`, replaces the exercise cell with that id."""

# %% unrolled_bytes
def unrolled_bytes(x_shape, kernel, stride, padding, itemsize=4):
    """(rows, columns, bytes) of X* for an input of x_shape = (N, C, H, W); kernel, stride, padding: (h, w) pairs."""
    n, c, h, w = x_shape
    ho = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    wo = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    rows, columns = c * kernel[0] * kernel[1], n * ho * wo
    return rows, columns, rows * columns * itemsize

# %% unroll
def unroll(x, kh, kw):
    """X* of x (N, C, H, W) for stride 1, no padding: (C·kh·kw, N·Ho·Wo), rows (c, i, j), columns (n, r, q)."""
    n, c, h, w = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    taps = [x[:, :, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)]  # each (N, C, Ho, Wo)
    stacked = jnp.stack(taps, axis=2)  # (N, C, kh·kw, Ho, Wo)
    return stacked.transpose(1, 2, 0, 3, 4).reshape(c * kh * kw, n * ho * wo)

# %% direct_conv
def direct_conv(x, w):
    """conv2d of x (N, C, H, W) with w (K, C, kh, kw), stride 1, no padding, one multiply-add per tap."""
    kh, kw = w.shape[2:]
    ho, wo = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    y = 0.0
    for i in range(kh):
        for j in range(kw):
            y = y + jnp.einsum("nchw,kc->nkhw", x[:, :, i:i + ho, j:j + wo], w[:, :, i, j])
    return y
