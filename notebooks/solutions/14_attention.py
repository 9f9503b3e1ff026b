"""Solutions to the exercises of notebooks/14_attention.ipynb.

Each block, headed `# %% <id>`, replaces the exercise cell with that id."""

# %% softmax_backward
def softmax_rows_backward(p, dp):
    """dS for P = softmax(S) along the last axis, from P and dP."""
    return p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))

# %% attention_backward
def attention_backward(q, k, v, d_out, scale):
    """(dQ, dK, dV) of O = softmax(scale · Q Kᵀ) V for the cotangent d_out."""
    p = jax.nn.softmax(scale * q @ k.T, axis=-1)
    dv = p.T @ d_out                      # Law 1: O = P V, V on the right
    dp = d_out @ v.T                      # Law 2: O = P V, P on the left
    ds = softmax_rows_backward(p, dp)     # each row's Jacobian diag(p) − p pᵀ
    return scale * ds @ k, scale * ds.T @ q, dv  # Law 2 on S = s Q Kᵀ and on Sᵀ = s K Qᵀ

# %% blocked_forward
def blocked_attention(q, k, v, scale, block):
    """(O, L): attention walking `block` keys at a time, and each row's log-sum-exp of the logits."""
    t = q.shape[0]
    m = jnp.full((t, 1), -jnp.inf)
    total = jnp.zeros((t, 1))
    acc = jnp.zeros((t, v.shape[1]))
    for start in range(0, k.shape[0], block):
        s = scale * q @ k[start:start + block].T
        m_new = jnp.maximum(m, s.max(axis=-1, keepdims=True))
        alpha = jnp.exp(m - m_new)
        e = jnp.exp(s - m_new)
        total = alpha * total + e.sum(axis=-1, keepdims=True)
        acc = alpha * acc + e @ v[start:start + block]  # what was summed under the old maximum is rescaled too
        m = m_new
    return acc / total, m + jnp.log(total)

# %% rollout
def rollout(maps):
    """(N, T, T): R = A_L ⋯ A_1 with A_l = rows-normalised (mean over heads of P_l + I)."""
    result = None
    for p in maps:
        a = p.mean(axis=1) + jnp.eye(p.shape[-1])
        a = a / a.sum(axis=-1, keepdims=True)
        result = a if result is None else a @ result
    return result
