"""One jit-compiled training step and one evaluation step."""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp

from tinyfn.layers import Layer, apply_with_state, has_state
from tinyfn.train import parallel
from tinyfn.train.optim import GradientTransformation, apply_updates, as_gradient_transformation

__all__ = ["make_train_step", "make_eval_step", "accuracy"]


def accuracy(logits, labels):
    """Share of rows whose largest logit is at the label (NaN for non-classification outputs)."""
    if logits.ndim != 2 or not jnp.issubdtype(labels.dtype, jnp.integer):
        return jnp.asarray(jnp.nan, jnp.float32)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)]))


def make_train_step(
    model: Layer,
    loss_fn,
    optimizer: GradientTransformation,
    *,
    donate: bool = True,
    mesh=None,
    with_state: bool | None = None,
    augment=None,
    update_extra_args=None,
):
    """A jitted training step.

    Without model state (the default for a stateless ``model``)::

        step(params, opt_state, x, y, key) -> (params, opt_state, metrics)

    With state (``with_state=True``; the default when ``tinyfn.layers.has_state(model)``)::

        step(params, model_state, opt_state, x, y, key) -> (params, model_state, opt_state, metrics)

    where ``model_state`` comes from ``tinyfn.layers.init_with_state`` (``{}``
    for a stateless model) and the step returns it as updated in training mode
    (batch norm's running statistics). ``key`` is a ``jax.random`` key or its raw
    data (``jax.random.key_data``).

    ``optimizer`` is a gradient transformation (tinyfn's ``sgd``/``adam``/``adamw``/
    ``chain`` or any optax one): ``updates, opt_state = optimizer.update(grads,
    opt_state, params)``, then ``params + updates``. Gradients come from
    ``jax.grad`` through the layers' handwritten rules; ``metrics`` holds
    ``loss``, ``accuracy`` (on the batch, before the update) and ``finite``. A step
    whose loss or gradients are not finite leaves params, model state and
    optimizer state unchanged (``finite`` false), so the caller can stop with the
    last good values. Params and both states are donated.

    With a ``mesh`` (``tinyfn.train.data_mesh``), the step is data-parallel:
    ``x`` and ``y`` are split along the mesh's ``data`` axis, params, states and
    metrics are replicated, and XLA inserts the all-reduce of the gradients (and
    of batch statistics: they are over the global batch). The batch size must
    divide by the number of devices.

    ``augment`` (a function ``(key, x) -> x`` such as
    ``tinyfn.train.augment.compose(random_crop(2), random_flip())``) transforms
    the batch on the device inside the compiled step, before the forward pass.
    Its key and the model's (dropout) key are ``jax.random.split(key)``, so the
    same step key gives the same augmented batch: a run stays reproducible and
    resumes bit-identically. Without ``augment`` the model gets ``key`` itself.

    ``update_extra_args`` (``metrics -> dict`` of the batch's ``loss``/``accuracy``) gives ``optimizer.update``
    optax's extra args: ``lambda m: {"value": m["loss"]}`` for ``optax.contrib.reduce_on_plateau`` (else refused).
    """
    optimizer, with_state = _check_train_step_arguments(model, optimizer, augment, with_state, update_extra_args)
    stateful_step = _train_step_body(model, loss_fn, optimizer, augment, update_extra_args)

    def stateless_step(params, opt_state, x, y, key):
        new_params, _, new_opt_state, metrics = stateful_step(params, {}, opt_state, x, y, key)
        return new_params, new_opt_state, metrics

    n_trees = 3 if with_state else 2
    return _compiled(stateful_step if with_state else stateless_step, n_trees, donate, mesh)


def _check_train_step_arguments(model, optimizer, augment, with_state, update_extra_args):
    """``(optimizer, with_state)``, checked: a gradient transformation (with the extra arguments its update needs),
    a callable ``augment``, state where the model has it."""
    optimizer = as_gradient_transformation(optimizer, op="make_train_step")
    if update_extra_args is None:
        _refuse_needed_extra_args(optimizer)
    elif not callable(update_extra_args):
        raise TypeError(
            "make_train_step: update_extra_args must be a function metrics -> dict of the update's keyword arguments, "
            f"got {type(update_extra_args).__name__}"
        )
    if augment is not None and not callable(augment):
        raise TypeError(f"make_train_step: augment must be a function (key, x) -> x, got {type(augment).__name__}")
    with_state = has_state(model) if with_state is None else bool(with_state)
    if has_state(model) and not with_state:
        raise ValueError(
            f"make_train_step: the model carries state ({model.name} holds batch statistics); "
            "use with_state=True and step(params, model_state, opt_state, x, y, key)"
        )
    return optimizer, with_state


def _needed_extra_args(fn, depth: int = 0):
    """``(transformation name, [keyword-only arguments without default])`` of the first update function inside
    ``fn`` (itself, or one it closes over: optax's ``chain`` keeps its members' update functions) that needs extra
    arguments; ``None`` if none does."""
    if depth > 4 or not callable(fn):
        return None
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        params = ()
    needed = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if needed:
        return getattr(fn, "__qualname__", repr(fn)).split(".<locals>")[0], needed
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        for inner in content if isinstance(content, (tuple, list)) else (content,):
            found = _needed_extra_args(getattr(inner, "update", inner), depth + 1)
            if found:
                return found
    return None


def _refuse_needed_extra_args(optimizer):
    found = _needed_extra_args(optimizer.update)
    if found:
        name, needed = found
        raise TypeError(
            f"make_train_step: the optimizer's {name} needs the keyword argument(s) {', '.join(needed)} in each update "
            "(optax's extra args); give them with update_extra_args, e.g. update_extra_args=lambda metrics: "
            '{"value": metrics["loss"]} (fit takes the same argument)'
        )


def _train_step_body(model, loss_fn, optimizer, augment, update_extra_args=None):
    """The uncompiled ``step(params, model_state, opt_state, x, y, key)``: a value-and-grad, an optimizer update,
    and every tree kept as it was where the loss or a gradient is not finite."""

    def stateful_step(params, model_state, opt_state, x, y, key):
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # raw key data (uint32), as fit stages it
            key = jax.random.wrap_key_data(key)
        if augment is not None:
            key, augment_key = jax.random.split(key)
            x = augment(augment_key, x)

        def objective(p):
            logits, new_model_state = apply_with_state(model, p, model_state, x, key=key, train=True)
            return loss_fn(logits, y), (logits, new_model_state)

        (loss, (logits, new_model_state)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        metrics = {"loss": loss, "accuracy": accuracy(logits, y)}
        extra = {} if update_extra_args is None else dict(update_extra_args(dict(metrics)))
        updates, new_opt_state = optimizer.update(grads, opt_state, params, **extra)
        new_params = apply_updates(params, updates)
        ok = jnp.isfinite(loss) & _all_finite(grads)
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        metrics["finite"] = ok
        return keep(new_params, params), keep(new_model_state, model_state), keep(new_opt_state, opt_state), metrics

    return stateful_step


def _compiled(step, n_trees, donate, mesh):
    """``step`` jitted, its first ``n_trees`` arguments donated; with a ``mesh``, data-parallel (``x``, ``y`` split
    along ``"data"``, the rest replicated) behind a batch-size check that names the sizes."""
    donate_argnums = tuple(range(n_trees)) if donate else ()
    if mesh is None:
        return jax.jit(step, donate_argnums=donate_argnums)
    rep, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    shardings = dict(in_shardings=(rep,) * n_trees + (data, data, rep), out_shardings=rep)
    sharded = jax.jit(step, donate_argnums=donate_argnums, **shardings)

    @functools.wraps(step)
    def checked(*args):
        parallel.check_batch_size(mesh, args[n_trees].shape[0])  # before jit's own, less telling, error
        return sharded(*args)

    return checked


def make_eval_step(model: Layer, loss_fn, *, with_state: bool | None = None, views=None):
    """A jitted ``(params, x, y) -> metrics`` (or ``(params, model_state, x, y) -> metrics`` with state).

    ``metrics`` holds the batch's mean ``loss``, ``accuracy`` and ``predictions``.
    The model runs in evaluation mode (``train=False``): batch norm reads the
    running statistics from ``model_state`` and leaves them as they are.

    ``views`` (test-time augmentation): a sequence of deterministic functions
    ``x -> x'`` of the batch (``tinyfn.train.augment.FLIP_VIEWS``: the images and
    their mirror images). The model sees every view, and the class probabilities
    ``p = (1/V) Σ_v softmax(f(v(x)))`` are averaged; the metrics are computed on the
    logits ``log p``, so the loss is the cross-entropy of the averaged probabilities.
    With views, ``metrics`` also holds ``view_loss`` and ``view_accuracy`` (shape
    ``(V,)``): each view's own metrics, from the same forward passes (with
    ``FLIP_VIEWS``, entry 0 is the single-view evaluation).
    """
    with_state = has_state(model) if with_state is None else bool(with_state)
    if has_state(model) and not with_state:
        raise ValueError(
            f"make_eval_step: the model carries state ({model.name}); use with_state=True and step(params, "
            "model_state, x, y)"
        )
    views = _check_views(views)

    def logits_of(params, model_state, x):
        """The logits the metrics are computed on, and each view's own logits (``None`` without views)."""
        if views is None:
            return apply_with_state(model, params, model_state, x, train=False)[0], None
        log_probs = []
        for i, view in enumerate(views):
            seen = view(x)
            if getattr(seen, "shape", None) != x.shape:
                raise ValueError(
                    f"make_eval_step: views[{i}] ({getattr(view, '__name__', view)}) must keep the batch's shape "
                    f"{x.shape}, got {getattr(seen, 'shape', type(seen).__name__)}"
                )
            logits = apply_with_state(model, params, model_state, seen, train=False)[0]
            if logits.ndim != 2:
                raise ValueError(
                    "make_eval_step: views average class probabilities and need (N, classes) logits, got shape "
                    f"{logits.shape}"
                )
            log_probs.append(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
        return jax.nn.logsumexp(jnp.stack(log_probs), axis=0) - jnp.log(float(len(views))), log_probs

    def stateful_step(params, model_state, x, y):
        logits, per_view = logits_of(params, model_state, x)
        preds = jnp.argmax(logits, axis=-1) if logits.ndim == 2 else logits
        metrics = {"loss": loss_fn(logits, y), "accuracy": accuracy(logits, y), "predictions": preds}
        if per_view is not None:
            metrics["view_loss"] = jnp.stack([loss_fn(v, y) for v in per_view])
            metrics["view_accuracy"] = jnp.stack([accuracy(v, y) for v in per_view])
        return metrics

    def stateless_step(params, x, y):
        return stateful_step(params, {}, x, y)

    return jax.jit(stateful_step if with_state else stateless_step)


def _check_views(views):
    if views is None:
        return None
    if callable(views) or not hasattr(views, "__len__") or len(views) == 0:
        raise TypeError(
            "make_eval_step: views must be a non-empty sequence of functions x -> x (e.g. augment.FLIP_VIEWS), got "
            f"{views!r}"
        )
    for i, view in enumerate(views):
        if not callable(view):
            raise TypeError(f"make_eval_step: views[{i}] must be a function x -> x, got {type(view).__name__} {view!r}")
    return tuple(views)
