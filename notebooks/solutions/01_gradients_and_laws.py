"""Solutions to the exercises of notebooks/01_gradients_and_laws.ipynb.

Each block, headed `# %% <id>`, is the full source of the stub cell whose metadata says `"exercise": "<id>"`.
tests/test_notebooks.py runs it in that cell's place; nothing in the notebook imports this file.
"""

# %% central_differences
def central_differences(f, x, eps=1e-6):
    """Gradient of the scalar function f at x (float64 numpy array), same shape as x."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        grad[i] = (f(up) - f(down)) / (2 * eps)
    return grad

# %% grad_wrt_x
def grad_wrt_x(G, C):
    """∇_X ℓ for Y = X C + D, given G = ∇_Y ℓ; shape of X."""
    return G @ C.T  # Law 2: the transpose of the other factor, on the same side

# %% quadratic_form_grad
def quadratic_form_grad(A, x):
    """∇ₓ (xᵀ A x) for A of shape (n, n) and x of shape (n,)."""
    # x as the left factor of xᵀ u (u = A x held fixed): u; x inside u = A x (Law 1): Aᵀ ∇ᵤ = Aᵀ x
    return A @ x + A.T @ x
