# %% unpool_bug
def unpool(g, switches, out_hw):
    "Each value of g (N, C, h, w) put back at its switch in a zero (N, C, H, W) plane."
    H, W = out_hw
    g, s = np.asarray(g), np.asarray(switches)
    out = np.zeros(g.shape[:2] + (H, W), g.dtype)
    n, ch, _, _ = np.indices(g.shape)
    out[n, ch, s // W, s % W] = g  # the bug: a switch is h * W + w, so divide by the width W, not the height H
    return out


# %% receptive_field
def rf_conv2(r, q):
    # conv2 (5×5, no padding): pool1 rows r .. r+4; pool1 (2×2, stride 2): conv1 rows 2r .. 2r+9;
    # conv1 (5×5, padding 2): input rows 2r−2 .. 2r+11, i.e. the half-open [2r−2, 2r+12), clipped to [0, 28)
    def span(i):
        return max(2 * i - 2, 0), min(2 * i + 12, 28)

    (r0, r1), (c0, c1) = span(r), span(q)
    return r0, r1, c0, c1


# %% top3_seed
def seed_top3(a, channel):
    a = np.asarray(a)
    plane = a[0, channel].ravel()
    keep = np.argsort(-plane, kind="stable")[:3]
    seed = np.zeros_like(a)
    seed[0, channel].flat[keep] = plane[keep]
    return jnp.asarray(seed)
