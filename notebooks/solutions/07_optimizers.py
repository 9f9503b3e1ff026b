# %% momentum_closed_form
def theta_after(T, lr, mu):
    # v_t = (1 − μ^t)/(1 − μ); θ_T = −η Σ_{t=1..T} v_t = −η (T − μ (1 − μ^T)/(1 − μ)) / (1 − μ)
    if mu == 0:
        return -lr * T
    return -lr * (T - mu * (1 - mu**T) / (1 - mu)) / (1 - mu)


# %% clip_bug
def clip_by_global_norm_numpy(grads, max_norm):
    "The gradient dict scaled by min(1, max_norm / ‖g‖), ‖g‖ the norm of all arrays together."
    # the bug: each array was scaled by its own norm, which changes the direction of the whole gradient
    norm = np.sqrt(sum(np.sum(g * g) for g in grads.values()))
    return {k: g * min(1.0, max_norm / norm) for k, g in grads.items()}


# %% adam_bug
def adam_one_array(theta, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    "theta after one Adam step per gradient in grads (float64, no weight decay)."
    theta = theta.astype(np.float64)
    m, s = np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        m_hat, s_hat = m / (1 - b1**t), s / (1 - b2**t)  # the bug: s was corrected with b1, not b2
        theta = theta - lr * m_hat / (np.sqrt(s_hat) + eps)
    return theta
