# %% stable_log_softmax
def log_softmax(z):
    "log softmax(z) of (N, K) logits, row by row, with the largest logit subtracted first."
    m = z.max(axis=1, keepdims=True)  # the bug: axis=0 took each column's max, a different constant per class
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


# %% label_smoothing_grad
def smoothed_ce_grad(z, y, eps):
    # -Σ q_k log p_k = -Σ q_k z_k + (Σ q_k) log Σ e^{z_j}, and Σ q_k = 1: the gradient is p − q, over N
    n, k = z.shape
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    q = np.full((n, k), eps / k)
    q[np.arange(n), y] += 1 - eps
    return (p - q) / n


# %% temperature_grad
def temperature_ce_grad(z, y, T):
    # chain rule through z / T: the usual (p − onehot) / N at the scaled logits, times 1/T
    s = z / T
    e = np.exp(s - s.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p / (len(y) * T)
