"""Solutions to the exercises of notebooks/02_an_autodiff_engine.ipynb.

Each block, headed `# %% <id>`, replaces the exercise cell with that id."""

# %% value_mul
def value_mul(x, y):
    y = y if isinstance(y, Value) else Value(y)
    return Value(x.data * y.data, ((x, y.data), (y, x.data)), "*")  # dz/dx = y, dz/dy = x


Value.__mul__ = Value.__rmul__ = value_mul

# %% topological_order
def topological_order(root):
    """All nodes root depends on, root included, each once and after its parents."""
    order, seen = [], set()

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent, _ in node.parents:
            visit(parent)
        order.append(node)

    visit(root)
    return order

# %% backward
def backward(root):
    """Set .grad of every node root depends on to d root / d node."""
    order = topological_order(root)
    for node in order:
        node.grad = 0.0
    root.grad = 1.0
    for node in reversed(order):  # every user of a node comes before it in this walk
        for parent, local in node.parents:
            parent.grad += local * node.grad  # the chain rule along one edge

# %% predicted_nodes
def predicted_nodes(n_points, n_in, n_out):
    """New Values created by one linear layer (no activation) on n_points points."""
    return n_points * n_out * 2 * n_in  # per input: one product and one sum

# %% laws_backward
def laws_loss_and_grads(p, X, T):
    """(L, {"W1": ..., "b1": ..., "W2": ..., "b2": ...}) for the MLP above, by the two laws."""
    Z = X @ p["W1"] + p["b1"]
    H = np.maximum(Z, 0.0)
    R = H @ p["W2"] + p["b2"] - T
    G_Y = 2.0 * R / len(X)
    G_Z = (G_Y @ p["W2"].T) * (Z > 0)  # Law 2, then relu's diagonal Jacobian
    grads = {"W2": H.T @ G_Y, "b2": G_Y.sum(axis=0), "W1": X.T @ G_Z, "b1": G_Z.sum(axis=0)}  # Law 1
    return float(np.mean(R**2)), grads
