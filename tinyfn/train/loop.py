"""The fit loop: keyed shuffling, a jitted step in a Python loop, evaluation, checkpoints, resume.

``fit`` is assembled from small pieces, each named for what it does: ``_check_fit_arguments`` (refuse what cannot
train, before any compilation), ``_start`` (the run's state, fresh or resumed: ``run_state.restore``),
``run_state.Saver`` (the checkpoint at a position), ``_placement`` (batches onto the device(s)), ``_epoch_plan`` (the
keyed order and step keys), ``_train_epoch`` (the steps, non-finite losses, signals), ``_close_epoch`` (evaluation,
history, the ``EpochSummary``) and ``_epochs`` (the loop over them). It reports through callbacks and prints nothing.

Order and keys: each epoch visits ``len(train_data) // batch_size`` batches (the remainder is dropped) in the order
``permutation(fold_in(key, epoch))``; the key of each step's dropout (and augmentation) is ``fold_in(fold_in(key,
epoch), batch)``. So a key reproduces a run exactly, and a resumed run matches an uninterrupted one bit for bit. The
step is compiled once for the whole run.

Reporting: ``callbacks`` are called with a ``StepInfo`` after every step, ``epoch_callbacks`` with an ``EpochSummary``
after every epoch. Unless ``quiet``, a tqdm progress bar runs during each epoch and, when ``epoch_callbacks`` is not
given, ``ConsoleLog()`` writes one line per epoch to stdout. ``history`` maps ``epoch``, ``train_loss``,
``train_accuracy``, ``eval_loss``, ``eval_accuracy`` (on ``eval_data``, NaN without it), ``images_per_second``,
``epoch_time``, ``wall_time`` (seconds since the start) and ``skipped_steps`` to one value per epoch.

Checkpoints: with ``checkpoint_dir``, ``CHECKPOINT_NAME`` there is rewritten (atomically) after every epoch, when a
step's loss becomes NaN/Inf (then a ``FloatingPointError`` names the epoch and step: the saved params are the last
finite ones), and on ``KeyboardInterrupt`` (re-raised after saving, with a note naming the checkpoint).
``resume=True`` continues from that checkpoint; a checkpoint saved mid-epoch resumes only with the same ``batch_size``
and training data length (its batch index counts in those). ``on_nonfinite="skip"`` instead drops such steps (params
unchanged) and counts them in ``history["skipped_steps"]``. SIGINT (Ctrl-C) and SIGTERM stop training at the end of
the step in flight: the checkpoint is saved at that exact position and ``Interrupted`` (a ``KeyboardInterrupt`` whose
message says where) is raised; a second signal interrupts at once.

Data parallel: with ``mesh`` (a ``jax.sharding.Mesh`` with a ``"data"`` axis, e.g. ``tinyfn.train.data_mesh(8)``)
every batch is placed split over the devices, params, optimizer and model state are replicated and XLA all-reduces the
gradients (and batch norm's statistics, which are over the global batch); ``batch_size`` must divide by the device
count. Same seed and global batch, same result as on one device (up to float32 summation order). Only process 0 writes
checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn.layers import apply_with_state, has_state, init_with_state
from tinyfn.losses import softmax_cross_entropy
from tinyfn.train import parallel
from tinyfn.train.checkpoint import CHECKPOINT_NAME
from tinyfn.train.evaluation import EvalResult, evaluate
from tinyfn.train.optim import as_gradient_transformation
from tinyfn.train.progress import ConsoleLog, EpochSummary, StepInfo, progress_bar
from tinyfn.train.run_state import HISTORY_KEYS, Run, Saver, restore
from tinyfn.train.signals import DeferredSignals, Interrupted, stopped_message
from tinyfn.train.step import make_eval_step, make_train_step

__all__ = [
    "fit",
    "FitResult",
    "evaluate",
    "EvalResult",
    "StepInfo",
    "EpochSummary",
    "Interrupted",
    "HISTORY_KEYS",
    "CHECKPOINT_NAME",
]


class FitResult(tuple):
    """What ``fit`` returns: unpacks as ``(params, history)``, as it always has; ``model_state`` holds the model's
    state after training (batch norm's running statistics; ``{}`` for a stateless model)::

        params, history = fit(...)           # any model
        result = fit(...); result.model_state  # the state to evaluate a stateful model with
    """

    def __new__(cls, params, history, model_state):
        result = super().__new__(cls, (params, history))
        result.model_state = model_state
        return result

    params = property(lambda self: self[0])
    history = property(lambda self: self[1])


def _initial_state(model, params, x_shape, op):
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


def _check_fit_arguments(model, params, train_data, eval_data, epochs, batch_size, on_nonfinite, mesh):
    """``(x, y, eval_data)`` as numpy arrays, or a clear error for anything that cannot train."""
    x, y = _check_data("train_data", train_data)
    if eval_data is not None:
        eval_data = _check_data("eval_data", eval_data)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(y):
        raise ValueError(
            f"fit: batch_size must be an int between 1 and the number of training examples ({len(y)}), "
            f"got {batch_size!r}"
        )
    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"fit: on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
    if mesh is not None:
        parallel.check_batch_size(mesh, batch_size)
    _check_labels(model, params, x, y, "train_data")
    if eval_data is not None:
        _check_labels(model, params, *eval_data, "eval_data")
    return x, y, eval_data


def _start(model, params, model_state, optimizer, x_shape, key, *, resume, ckpt_path, batch_size, examples) -> Run:
    """The run's state: copies of ``params`` and the model state (the step donates its inputs: not the caller's),
    a fresh optimizer state; or, with ``resume``, what the checkpoint at ``ckpt_path`` holds."""
    params = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params)
    if model_state is None:
        model_state = _initial_state(model, params, x_shape, "fit")
    model_state = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), model_state)
    run = Run(params, optimizer.init(params), model_state)
    if resume:
        run = restore(ckpt_path, run, key, batch_size=batch_size, examples=examples)
    return run


def _replicated(run: Run, mesh) -> Run:
    """``run`` with params and both states copied to every device of ``mesh`` (as it is without one)."""
    if mesh is not None:
        trees = parallel.replicate((run.params, run.opt_state, run.model_state), mesh)
        run.params, run.opt_state, run.model_state = trees
    return run


def _evaluator(model, eval_data, loss_fn, eval_batch_size):
    """``(params, model_state) -> (loss, accuracy)`` on ``eval_data`` with one compiled step; ``None`` without data."""
    if eval_data is None:
        return None
    eval_step = make_eval_step(model, loss_fn, with_state=True)

    def evaluate_now(p, s):
        return evaluate(
            model, p, eval_data, batch_size=eval_batch_size, loss_fn=loss_fn, eval_step=eval_step, model_state=s
        )[:2]

    return evaluate_now


def _placement(mesh, batch_size):
    """``put(x, y, key)``: one batch onto the device, or this process's rows of it split over the mesh."""
    if mesh is None:
        return lambda xb, yb, kb: jax.device_put((xb, yb, kb))  # one transfer call per step
    rows = parallel.local_rows(batch_size)  # this process's share of each global batch
    rep = parallel.replicated(mesh)
    return lambda xb, yb, kb: (*parallel.put_batch(mesh, xb[rows], yb[rows]), jax.device_put(kb, rep))


def _epoch_plan(key, epoch: int, n: int, steps: int):
    """The epoch's example order ``permutation(fold_in(key, epoch))`` and the key data of each step's dropout."""
    ekey = jax.random.fold_in(key, epoch)
    order = np.asarray(jax.random.permutation(ekey, n))
    step_keys = np.asarray(jax.random.key_data(jax.vmap(lambda b: jax.random.fold_in(ekey, b))(jnp.arange(steps))))
    return order, step_keys


def _count_step(run: Run, m, batch, *, steps, saver, on_nonfinite) -> bool:
    """Add a step's metrics to the epoch's sums; a non-finite step is skipped, or saves the last finite params and
    raises."""
    finite = bool(m["finite"])
    if finite:
        run.loss_sum, run.accuracy_sum = run.loss_sum + float(m["loss"]), run.accuracy_sum + float(m["accuracy"])
        run.count += 1
    elif on_nonfinite == "skip":  # the step left params and optimizer state as they were
        run.skipped += 1
    else:
        path = saver.save(run, batch)
        where = f"; the last finite params were saved to {path}" if path else ""
        raise FloatingPointError(
            f"loss became {float(m['loss'])} at epoch {run.epoch + 1}, step {batch + 1} of {steps} "
            f"(global step {run.epoch * steps + batch + 1}){where}"
        )
    return finite


def _train_epoch(
    run: Run, data, *, train_step, put, key, batch_size, steps, epochs, saver, signals, on_nonfinite, callbacks, quiet
):
    """Take the epoch's remaining steps; on a non-finite loss, a signal or Ctrl-C save the position and raise."""
    x, y = data
    order, step_keys = _epoch_plan(key, run.epoch, len(y), steps)

    def batch_at(b):  # staged ahead: copied to the device(s) while the step before it runs
        idx = order[b * batch_size : (b + 1) * batch_size]
        return put(x[idx], y[idx], step_keys[b])

    first, t_epoch = run.batch, time.perf_counter()
    bar = progress_bar(total=steps, initial=first, desc=f"epoch {run.epoch + 1}/{epochs}", quiet=quiet)
    staged = batch_at(first) if first < steps else None
    batch = first
    try:
        for batch in range(first, steps):
            run.params, run.model_state, run.opt_state, m = train_step(
                run.params, run.model_state, run.opt_state, *staged
            )
            staged = batch_at(batch + 1) if batch + 1 < steps else None
            m = jax.device_get(m)
            finite = _count_step(run, m, batch, steps=steps, saver=saver, on_nonfinite=on_nonfinite)
            bar.update(1)
            if run.count and (run.count % 20 == 0 or batch == steps - 1):
                rate = (batch + 1 - first) * batch_size / max(time.perf_counter() - t_epoch, 1e-9)
                mean_loss, mean_accuracy = run.loss_sum / run.count, run.accuracy_sum / run.count
                bar.set_postfix(
                    loss=f"{mean_loss:.4f}", acc=f"{mean_accuracy:.4f}", img_s=f"{rate:,.0f}", refresh=False
                )
            info = StepInfo(run.epoch, batch, run.epoch * steps + batch, float(m["loss"]), float(m["accuracy"]), finite)
            for callback in callbacks:
                callback(info)
            if signals.signum is not None:
                path = saver.save(run, batch + 1)
                raise Interrupted(stopped_message(signals.signum, run.epoch, batch + 1, steps, path), signals.signum)
    except KeyboardInterrupt as exc:
        if not isinstance(exc, Interrupted):
            stepped = run.count and not any(a.is_deleted() for a in jax.tree_util.tree_leaves(run.params))
            done = batch + 1 if stepped else batch
            path = saver.save(run, done)
            if path:
                exc.add_note(
                    f"interrupted at epoch {run.epoch + 1}, step {done} of {steps}: checkpoint saved to {path}"
                )
        raise
    finally:
        bar.close()
    return (steps - first) * batch_size / (time.perf_counter() - t_epoch), time.perf_counter() - t_epoch


def _close_epoch(run: Run, *, rate, epoch_time, evaluate_now, epochs, wall_time) -> EpochSummary:
    """Evaluate, append the epoch to ``run.history`` and return its summary."""
    nan = float("nan")
    eval_loss, eval_accuracy = evaluate_now(run.params, run.model_state) if evaluate_now is not None else (nan, nan)
    train_loss, train_accuracy = (run.loss_sum / run.count, run.accuracy_sum / run.count) if run.count else (nan, nan)
    summary = EpochSummary(
        run.epoch + 1, epochs, train_loss, train_accuracy, eval_loss, eval_accuracy, rate, epoch_time, run.skipped
    )
    for name in HISTORY_KEYS:  # the summary's fields, and the wall time since the run began
        run.history[name].append(wall_time() if name == "wall_time" else getattr(summary, name))
    return summary


def _epochs(run: Run, data, *, epochs, steps, saver, evaluate_now, epoch_callbacks, **epoch_kw) -> FitResult:
    """Train the remaining epochs, each closed by an evaluation, a checkpoint and the epoch callbacks."""
    t_start = time.perf_counter() - run.wall_offset
    with DeferredSignals() as signals:
        while run.epoch < epochs:
            rate, epoch_time = _train_epoch(
                run, data, steps=steps, epochs=epochs, saver=saver, signals=signals, **epoch_kw
            )
            wall_time = lambda: time.perf_counter() - t_start  # noqa: E731
            summary = _close_epoch(
                run, rate=rate, epoch_time=epoch_time, evaluate_now=evaluate_now, epochs=epochs, wall_time=wall_time
            )
            run.next_epoch()
            path = saver.save(run, 0)
            for callback in epoch_callbacks:
                callback(summary)
            if (
                signals.signum is not None and run.epoch < epochs
            ):  # a signal during evaluation: stop at the epoch boundary
                raise Interrupted(stopped_message(signals.signum, run.epoch, 0, steps, path), signals.signum)
        return FitResult(run.params, run.history, run.model_state)


def fit(
    model,
    params,
    train_data,
    *,
    epochs: int,
    batch_size: int,
    optimizer,
    key,
    eval_data=None,
    checkpoint_dir=None,
    resume: bool = False,
    loss_fn=softmax_cross_entropy,
    metadata: dict | None = None,
    quiet: bool = False,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    epoch_callbacks: Sequence[Callable[[EpochSummary], None]] | None = None,
    eval_batch_size: int = 1000,
    mesh=None,
    on_nonfinite: str = "stop",
    model_state=None,
    augment=None,
    eval_loss_fn=None,
) -> FitResult:
    """Train ``model`` from ``params`` with mini-batch ``optimizer`` steps; returns ``(params, history)``.

    ``optimizer`` is a gradient transformation (tinyfn's ``sgd``/``adam``/``adamw``/``chain`` or any optax one); its
    state is checkpointed and resumed too. The result, a ``FitResult``, unpacks as ``(params, history)``;
    ``result.model_state`` is the model's state after training (batch norm's running statistics, trained in training
    mode; ``model_state`` starts it from a given one). ``augment`` (``(key, x) -> x``, e.g.
    ``augment.compose(random_crop(2), random_flip())``) runs on the device inside the compiled step. ``eval_loss_fn``
    (default ``loss_fn``) is the loss reported on ``eval_data``. ``checkpoint_dir``, ``resume``, ``metadata`` (JSON,
    in the checkpoint), ``on_nonfinite``, callbacks, signals and ``mesh``: see ``tinyfn.train.loop``'s docstring.
    """
    optimizer = as_gradient_transformation(optimizer, op="fit")  # never an optax update taken for the new params
    x, y, eval_data = _check_fit_arguments(model, params, train_data, eval_data, epochs, batch_size, on_nonfinite, mesh)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    steps = len(y) // batch_size
    frame = dict(batch_size=batch_size, examples=len(y))
    run = _start(model, params, model_state, optimizer, x.shape[1:], key, resume=resume, ckpt_path=ckpt_path, **frame)
    run = _replicated(run, mesh)
    saver = Saver(ckpt_path, key=key, metadata=metadata, epochs=epochs, steps=steps, **frame)
    train_step = make_train_step(model, loss_fn, optimizer, mesh=mesh, with_state=True, augment=augment)
    evaluate_now = _evaluator(model, eval_data, loss_fn if eval_loss_fn is None else eval_loss_fn, eval_batch_size)
    return _epochs(
        run,
        (x, y),
        epochs=epochs,
        steps=steps,
        saver=saver,
        evaluate_now=evaluate_now,
        epoch_callbacks=(() if quiet else (ConsoleLog(),)) if epoch_callbacks is None else epoch_callbacks,
        train_step=train_step,
        put=_placement(mesh, batch_size),
        key=key,
        batch_size=batch_size,
        on_nonfinite=on_nonfinite,
        callbacks=callbacks,
        quiet=quiet,
    )
