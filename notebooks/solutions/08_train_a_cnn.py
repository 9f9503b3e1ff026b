# %% momentum_step
def momentum_step(params, velocity, x, y, lr, mu):
    loss, grads = jax.value_and_grad(lambda p: losses.softmax_cross_entropy(model.apply(p, x), y))(params)
    velocity = jax.tree_util.tree_map(lambda v, g: mu * v + g, velocity, grads)
    params = jax.tree_util.tree_map(lambda p, v: p - lr * v, params, velocity)
    return params, velocity, loss


# %% minibatch_bug
def minibatches(x, y, batch_size, key):
    "One epoch of shuffled mini-batches (x, y); the last partial batch is dropped."
    perm = np.asarray(jax.random.permutation(key, len(x)))
    for i in range(len(x) // batch_size):
        rows = perm[i * batch_size : (i + 1) * batch_size]
        yield x[rows], y[rows]  # the bug: the labels were taken in the old order, not shuffled with their images


# %% recall_precision
def recall_precision(m):
    right = np.diag(m)
    return right / m.sum(axis=1), right / m.sum(axis=0)  # rows: images of the class; columns: given the label
