"""``fit``'s arguments, checked before anything compiles: the data, the sizes, and the states a run starts from."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn.layers import apply_with_state, has_state, init_with_state
from tinyfn.train import parallel
from tinyfn.train.batches import ArrayBatches, IterableBatches, is_array_pair
from tinyfn.train.checkpoint import CheckpointError, restore_like

__all__ = ["check_fit_arguments", "initial_state", "starting_states"]


def initial_state(model, params, x_shape, op):
    """A stateful model's initial state (deterministic: batch norm starts at mean 0, variance 1), ``{}`` for the
    others."""
    if not has_state(model):
        return {}
    _, like, state = init_with_state(model, jax.random.key(0), (None, *x_shape))
    if jax.tree_util.tree_structure(like) != jax.tree_util.tree_structure(params):
        raise ValueError(
            f"{op}: params do not match the model's structure; pass model_state= from tinyfn.layers.init_with_state"
        )
    return state


def _check_data(name, data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"fit: {name} must be a pair (images, labels), got {type(data).__name__}")
    x, y = data
    if len(x) != len(y):
        raise ValueError(f"fit: {name}: {len(x)} images but {len(y)} labels")
    return np.asarray(x), np.asarray(y)


def _check_labels(model, params, x, y, name):
    """Integer labels must index the model's outputs: out-of-range ones would train on garbage silently."""
    if not np.issubdtype(y.dtype, np.integer) or len(y) == 0:
        return

    def logits(p, a):  # the initial state is enough for the shape: traced, never run
        return apply_with_state(model, p, init_with_state(model, jax.random.key(0), a.shape)[2], a)[0]

    out = jax.eval_shape(logits, params, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
    if len(out.shape) != 2:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= out.shape[1]:
        bad = int(np.argmax((y < 0) | (y >= out.shape[1])))
        raise ValueError(
            f"fit: {name}: labels must be in 0..{out.shape[1] - 1} (the model has {out.shape[1]} outputs), "
            f"got {int(y[bad])} at index {bad}"
        )


def _train_source(model, params, train_data, batch_size, *, epochs, resume, mesh):
    """``ArrayBatches`` for a pair of arrays (``batch_size`` checked), else ``IterableBatches``."""
    if not is_array_pair(train_data):
        if mesh is not None:
            raise ValueError("fit: mesh= needs train_data as arrays (images, labels), not an iterable of batches")
        return IterableBatches(train_data, epochs=epochs, resume=resume)
    x, y = _check_data("train_data", train_data)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(y):
        raise ValueError(
            f"fit: batch_size must be an int between 1 and the number of training examples ({len(y)}), "
            f"got {batch_size!r}"
        )
    if mesh is not None:
        parallel.check_batch_size(mesh, batch_size)
    _check_labels(model, params, x, y, "train_data")
    return ArrayBatches(x, y, batch_size)


def check_fit_arguments(model, params, train_data, eval_data, epochs, batch_size, on_nonfinite, mesh, resume):
    """``(source, eval_data)``: the training batches' source and the evaluation arrays, or a clear error for
    anything that cannot train."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive int, got {epochs!r}")
    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"fit: on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
    source = _train_source(model, params, train_data, batch_size, epochs=epochs, resume=resume, mesh=mesh)
    if eval_data is not None:
        eval_data = _check_data("eval_data", eval_data)
        _check_labels(model, params, *eval_data, "eval_data")
    return source, eval_data


def _like(name, given, expected):
    """``given`` in ``expected``'s structure (e.g. the look-alike state ``load_checkpoint`` rebuilds), leaf by leaf;
    a mismatch is a ``ValueError`` naming the argument."""
    try:
        return restore_like(given, expected, what=name)
    except CheckpointError as exc:
        raise ValueError(f"fit: {name}= does not match the run's ({exc})") from None


def starting_states(model, params, optimizer, x_shape, *, opt_state, model_state):
    """``(params, opt_state, model_state)``: copies (the step donates its inputs: not the caller's) of ``params``
    and of the given states, checked against the model's and ``optimizer.init(params)``, or fresh states."""
    copy = lambda tree: jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)  # noqa: E731
    params = copy(params)
    if model_state is None:
        model_state = initial_state(model, params, x_shape, "fit")
    else:
        expected = jax.eval_shape(lambda: initial_state(model, params, x_shape, "fit"))
        model_state = _like("model_state", model_state, expected)
    fresh_opt = optimizer.init(params)
    opt_state = fresh_opt if opt_state is None else _like("opt_state", opt_state, fresh_opt)
    return params, copy(opt_state), copy(model_state)
