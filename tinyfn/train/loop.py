"""The fit loop: keyed shuffling, a jitted step in a Python loop, evaluation, checkpoints, resume.

``fit`` is assembled from small pieces, each named for what it does:
``_check_fit_arguments`` (refuse what cannot train, before any compilation),
``_resolve_mesh`` (data parallelism), ``_restore`` (resume from a checkpoint),
``_Saver`` (the checkpoint at a position), ``_placement`` (batches onto the
device(s)), ``_epoch_plan`` (the keyed order and step keys), ``_train_epoch``
(the steps, non-finite losses, signals) and ``_close_epoch`` (evaluation, history,
the ``EpochSummary``). It reports through callbacks and prints nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import jax
import jax.numpy as jnp

from tinyfn.layers import apply_with_state, has_state, init_with_state
from tinyfn.losses import softmax_cross_entropy
from tinyfn.train import parallel
from tinyfn.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_like, save_checkpoint
from tinyfn.train.progress import ConsoleLog, EpochSummary, StepInfo, progress_bar
from tinyfn.train.optim import as_gradient_transformation
from tinyfn.train.step import make_eval_step, make_train_step

__all__ = ["fit", "FitResult", "evaluate", "EvalResult", "StepInfo", "EpochSummary", "Interrupted", "HISTORY_KEYS", "CHECKPOINT_NAME"]

HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy", "images_per_second", "epoch_time", "wall_time", "skipped_steps")


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT (Ctrl-C) or SIGTERM after the step in flight, with a checkpoint saved."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class _DeferredSignals:
    """While active (main thread only), SIGINT and SIGTERM set ``self.signum`` instead of interrupting: the loop
    stops at the end of the step in flight, where params and position agree. A second signal interrupts at once."""

    def __init__(self):
        self.signum, self._old = None, {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        return False


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
    """A stateful model's initial state (deterministic: batch norm starts at mean 0, variance 1), ``{}`` for the others."""
    if not has_state(model):
        return {}
    _, like, state = init_with_state(model, jax.random.key(0), (None, *x_shape))
    if jax.tree_util.tree_structure(like) != jax.tree_util.tree_structure(params):
        raise ValueError(f"{op}: params do not match the model's structure; pass model_state= from tinyfn.layers.init_with_state")
    return state


class EvalResult(tuple):
    """What ``evaluate`` returns: unpacks as ``(loss, accuracy, predictions)``; with test-time views,
    ``view_loss`` and ``view_accuracy`` hold each view's own mean loss and accuracy (lists, one per
    view, in the order of ``views``; ``None`` without views)::

        loss, acc, preds = evaluate(...)
        result = evaluate(..., views=FLIP_VIEWS); result.view_accuracy[0]  # the single-view accuracy
    """

    def __new__(cls, loss, accuracy, predictions, view_loss=None, view_accuracy=None):
        result = super().__new__(cls, (loss, accuracy, predictions))
        result.view_loss, result.view_accuracy = view_loss, view_accuracy
        return result

    loss = property(lambda self: self[0])
    accuracy = property(lambda self: self[1])
    predictions = property(lambda self: self[2])


def evaluate(model, params, data, *, batch_size: int = 1000, loss_fn=softmax_cross_entropy, eval_step=None, model_state=None, views=None) -> EvalResult:
    """Mean loss, accuracy and the predictions of ``model`` on ``data = (x, y)``, in batches.

    The model runs in evaluation mode. A stateful model (batch norm) needs its
    ``model_state`` (``fit(...).model_state`` or ``load_model(...).model_state``);
    ``eval_step`` is a ``make_eval_step(model, loss_fn, with_state=True)``.
    ``views`` averages the class probabilities over deterministic views of each
    batch (test-time augmentation, e.g. ``augment.FLIP_VIEWS``; see ``make_eval_step``);
    the result's ``view_loss`` and ``view_accuracy`` then hold each view's own metrics,
    computed from the same forward passes.
    """
    if eval_step is not None and views is not None:
        raise ValueError("evaluate: pass views= or eval_step=, not both (build the step with make_eval_step(..., views=views))")
    x, y = data
    n = len(y)
    if model_state is None:
        if has_state(model):
            raise ValueError(f"evaluate: the model carries state ({model.name}: running statistics); pass model_state= (from fit(...).model_state or load_model(...).model_state)")
        model_state = {}
    eval_step = eval_step or make_eval_step(model, loss_fn, with_state=True, views=views)
    loss = correct = 0.0
    view_loss = view_correct = None
    preds = []

    def dispatched(start):  # queued on the device; read back one batch later, so the device never waits on the host
        return min(batch_size, n - start), eval_step(params, model_state, jnp.asarray(x[start : start + batch_size]), jnp.asarray(y[start : start + batch_size]))

    pending = dispatched(0) if n else None
    for start in range(0, n, batch_size):
        size, m = pending
        pending = dispatched(start + batch_size) if start + batch_size < n else None
        m = jax.device_get(m)
        loss += float(m["loss"]) * size
        correct += float(m["accuracy"]) * size
        if "view_loss" in m:
            view_loss = (0.0 if view_loss is None else view_loss) + np.asarray(m["view_loss"], np.float64) * size
            view_correct = (0.0 if view_correct is None else view_correct) + np.asarray(m["view_accuracy"], np.float64) * size
        preds.append(np.asarray(m["predictions"]))
    per_view = (None, None) if view_loss is None else ([float(v) / n for v in view_loss], [float(v) / n for v in view_correct])
    return EvalResult(loss / n, correct / n, np.concatenate(preds), *per_view)


@dataclass
class _Run:
    """Where training stands: the state the step carries, and the position it has reached."""

    params: object
    opt_state: object
    model_state: object
    epoch: int = 0  # 0-based epoch in progress
    batch: int = 0  # steps of that epoch already taken
    loss_sum: float = 0.0  # over the finite steps of the epoch so far
    accuracy_sum: float = 0.0
    count: int = 0
    skipped: int = 0
    history: dict = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    wall_offset: float = 0.0  # seconds trained before a resume

    def position(self, batch: int) -> dict:
        return {"epoch": self.epoch, "batch": batch, "loss_sum": self.loss_sum, "accuracy_sum": self.accuracy_sum, "count": self.count}

    def next_epoch(self):
        self.epoch, self.batch, self.loss_sum, self.accuracy_sum, self.count, self.skipped = self.epoch + 1, 0, 0.0, 0.0, 0, 0


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
        raise ValueError(f"fit: {name}: labels must be in 0..{out.shape[1] - 1} (the model has {out.shape[1]} outputs), got {int(y[bad])} at index {bad}")


def _check_fit_arguments(model, params, train_data, eval_data, epochs, batch_size, on_nonfinite):
    """``(x, y, eval_data)`` as numpy arrays, or a clear error for anything that cannot train."""
    x, y = _check_data("train_data", train_data)
    if eval_data is not None:
        eval_data = _check_data("eval_data", eval_data)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(y):
        raise ValueError(f"fit: batch_size must be an int between 1 and the number of training examples ({len(y)}), got {batch_size!r}")
    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"fit: on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
    _check_labels(model, params, x, y, "train_data")
    if eval_data is not None:
        _check_labels(model, params, *eval_data, "eval_data")
    return x, y, eval_data


def _resolve_mesh(mesh, devices, batch_size):
    """The data-parallel mesh (from ``mesh`` or a device count/list), its batch size checked; ``None`` on one device."""
    if devices is not None:
        if mesh is not None:
            raise ValueError("fit: give mesh or devices, not both")
        mesh = parallel.data_mesh(devices)
    if mesh is not None:
        parallel.check_batch_size(mesh, batch_size)
    return mesh


def _restore(ckpt_path, run: _Run, key) -> _Run:
    """The run saved at ``ckpt_path``: params, optimizer and model state, position, history; refused if another key wrote it."""
    if ckpt_path is None or not ckpt_path.is_file():
        raise FileNotFoundError(f"fit: resume=True but there is no checkpoint to resume from at {ckpt_path}")
    ckpt = load_checkpoint(ckpt_path, like=run.params)
    pos = ckpt.metadata.get("position") or {}
    if ckpt.opt_state is None or ckpt.key is None or not pos:
        raise ValueError(f"fit: {ckpt_path} holds no training position (optimizer state, key, epoch); it cannot be resumed")
    if not np.array_equal(jax.random.key_data(ckpt.key), jax.random.key_data(key)):
        raise ValueError(f"fit: {ckpt_path} was written by a run with another key (seed); resume with the same seed")
    history = {k: list(ckpt.metadata.get("history", {}).get(k, [])) for k in HISTORY_KEYS}
    if ckpt.model_state is None and jax.tree_util.tree_leaves(run.model_state):
        raise ValueError(f"fit: {ckpt_path} holds no model state (running statistics) but the model carries state; it cannot be resumed")
    model_state = restore_like(ckpt.model_state, run.model_state, what="model_state") if ckpt.model_state is not None else run.model_state
    return _Run(
        ckpt.params, restore_like(ckpt.opt_state, run.opt_state), model_state, pos["epoch"], pos["batch"],
        pos["loss_sum"], pos["accuracy_sum"], pos["count"], 0, history, history["wall_time"][-1] if history["wall_time"] else 0.0,
    )  # fmt: skip


def _one_copy(a):
    """A replicated array's copy on this process's first device (multi-host safe), anything else as it is."""
    return a.addressable_data(0) if isinstance(a, jax.Array) and len(a.sharding.device_set) > 1 else a


class _Saver:
    """Writes the run's checkpoint at a position (process 0 only); ``save`` returns the path, or ``None`` if nothing was written."""

    def __init__(self, path, *, key, metadata, epochs, batch_size, steps):
        self.path, self.key, self.steps = path, key, steps
        self.metadata = dict(metadata or {}, epochs=epochs, batch_size=batch_size)

    def save(self, run: _Run, batch: int):
        if self.path is None or not parallel.is_writer():
            return None
        meta = dict(self.metadata, position=run.position(batch), history=run.history)
        local = lambda tree: jax.tree_util.tree_map(_one_copy, tree)  # noqa: E731
        step = run.epoch * self.steps + batch
        return save_checkpoint(
            self.path, local(run.params), opt_state=local(run.opt_state), model_state=local(run.model_state), step=step, key=self.key, metadata=meta,
        )  # fmt: skip


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


def _stopped(signum, epoch, done, steps, path) -> str:
    return f"{signal.Signals(signum).name} at epoch {epoch + 1}, after step {done} of {steps}" + (f": checkpoint saved to {path}" if path else "")


def _train_epoch(run: _Run, data, *, train_step, put, key, batch_size, steps, epochs, saver, signals, on_nonfinite, callbacks, quiet):
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
            run.params, run.model_state, run.opt_state, m = train_step(run.params, run.model_state, run.opt_state, *staged)
            staged = batch_at(batch + 1) if batch + 1 < steps else None
            m = jax.device_get(m)
            finite = bool(m["finite"])
            if finite:
                run.loss_sum, run.accuracy_sum, run.count = run.loss_sum + float(m["loss"]), run.accuracy_sum + float(m["accuracy"]), run.count + 1
            elif on_nonfinite == "skip":  # the step left params and optimizer state as they were
                run.skipped += 1
            else:
                path = saver.save(run, batch)
                where = f"; the last finite params were saved to {path}" if path else ""
                raise FloatingPointError(
                    f"loss became {float(m['loss'])} at epoch {run.epoch + 1}, step {batch + 1} of {steps} "
                    f"(global step {run.epoch * steps + batch + 1}){where}"
                )
            bar.update(1)
            if run.count and (run.count % 20 == 0 or batch == steps - 1):
                rate = (batch + 1 - first) * batch_size / max(time.perf_counter() - t_epoch, 1e-9)
                bar.set_postfix(loss=f"{run.loss_sum / run.count:.4f}", acc=f"{run.accuracy_sum / run.count:.4f}", img_s=f"{rate:,.0f}", refresh=False)
            for callback in callbacks:
                callback(StepInfo(run.epoch, batch, run.epoch * steps + batch, float(m["loss"]), float(m["accuracy"]), finite))
            if signals.signum is not None:
                path = saver.save(run, batch + 1)
                raise Interrupted(_stopped(signals.signum, run.epoch, batch + 1, steps, path), signals.signum)
    except KeyboardInterrupt as exc:
        if not isinstance(exc, Interrupted):
            done = batch + 1 if run.count and not any(a.is_deleted() for a in jax.tree_util.tree_leaves(run.params)) else batch
            path = saver.save(run, done)
            if path:
                exc.add_note(f"interrupted at epoch {run.epoch + 1}, step {done} of {steps}: checkpoint saved to {path}")
        raise
    finally:
        bar.close()
    return (steps - first) * batch_size / (time.perf_counter() - t_epoch), time.perf_counter() - t_epoch


def _close_epoch(run: _Run, *, rate, epoch_time, evaluate_now, epochs, wall_time) -> EpochSummary:
    """Evaluate, append the epoch to ``run.history`` and return its summary."""
    eval_loss, eval_accuracy = evaluate_now(run.params, run.model_state) if evaluate_now is not None else (float("nan"), float("nan"))
    summary = EpochSummary(
        run.epoch + 1, epochs, run.loss_sum / run.count if run.count else float("nan"), run.accuracy_sum / run.count if run.count else float("nan"),
        eval_loss, eval_accuracy, rate, epoch_time, run.skipped,
    )  # fmt: skip
    h = run.history
    for name in ("epoch", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy", "images_per_second", "epoch_time"):
        h[name].append(getattr(summary, name))
    h["skipped_steps"].append(run.skipped)
    h["wall_time"].append(wall_time())
    return summary


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
    devices=None,
    on_nonfinite: str = "stop",
    model_state=None,
    augment=None,
    eval_loss_fn=None,
) -> FitResult:
    """Train ``model`` from ``params`` with mini-batch ``optimizer`` steps; returns ``(params, history)``.

    ``optimizer`` is a gradient transformation: tinyfn's ``sgd``/``adam``/``adamw``/``chain``
    or any optax one (``optax.adam(1e-3)``); its state is checkpointed and resumed too.

    The result is a ``FitResult``: it unpacks as ``(params, history)``, and
    ``result.model_state`` is the model's state after training. A stateful model
    (batch norm) trains its statistics in training mode and is evaluated with
    them; ``model_state`` starts it from a given state (default: the model's
    initial one, from ``tinyfn.layers.init_with_state``). The checkpoint stores
    the state (tensors ``model_state.*``) and resume restores it.

    ``augment`` (a function ``(key, x) -> x``, e.g.
    ``tinyfn.train.augment.compose(random_crop(2), random_flip())``) runs on the
    device inside the compiled step, keyed from the step's key (see
    ``make_train_step``): augmented runs reproduce and resume bit for bit.

    Each epoch visits ``len(train_data) // batch_size`` batches (the remainder is
    dropped) in the order ``permutation(fold_in(key, epoch))``; the key of each
    step's dropout is ``fold_in(fold_in(key, epoch), batch)``. So a key
    reproduces a run exactly, and a resumed run matches an uninterrupted one
    bit for bit. The step is compiled once for the whole run.

    ``eval_loss_fn`` is the loss reported on ``eval_data`` (default ``loss_fn``): the
    plain ``softmax_cross_entropy`` when training with a regularised one, e.g.
    ``functools.partial(softmax_cross_entropy, label_smoothing=0.1)``.

    ``history`` maps ``epoch``, ``train_loss``, ``train_accuracy``, ``eval_loss``,
    ``eval_accuracy`` (on ``eval_data``, NaN without it), ``images_per_second``,
    ``epoch_time``, ``wall_time`` (seconds since the start) and
    ``skipped_steps`` to one value per epoch.

    Reporting: ``callbacks`` are called with a ``StepInfo`` after every step,
    ``epoch_callbacks`` with an ``EpochSummary`` after every epoch. Unless
    ``quiet``, a tqdm progress bar runs during each epoch and, when
    ``epoch_callbacks`` is not given, ``ConsoleLog()`` writes one line per
    epoch to stdout. ``fit`` itself prints nothing.

    With ``checkpoint_dir``, ``CHECKPOINT_NAME`` there is rewritten
    (atomically) after every epoch, when a step's loss becomes NaN/Inf (then a
    ``FloatingPointError`` names the epoch and step: the saved params are the last
    finite ones), and on ``KeyboardInterrupt`` (re-raised after saving, with a
    note naming the checkpoint). ``resume=True`` continues from that
    checkpoint. ``metadata`` (JSON) is stored in it. ``on_nonfinite="skip"``
    instead drops such steps (params unchanged) and counts them in
    ``history["skipped_steps"]``.

    SIGINT (Ctrl-C) and SIGTERM stop training at the end of the step in flight:
    the checkpoint is saved at that exact position and ``Interrupted`` (a
    ``KeyboardInterrupt`` whose message says where) is raised; a second signal
    interrupts at once.

    Data parallel: with ``mesh`` (a ``jax.sharding.Mesh`` with a ``"data"``
    axis) or ``devices`` (a count or a list, see ``tinyfn.train.data_mesh``),
    every batch is placed split over the devices, params, optimizer and model state
    are replicated and XLA all-reduces the gradients (and batch norm's statistics,
    which are over the global batch); ``batch_size`` must divide by
    the device count. Same seed and global batch, same result as on one device
    (up to float32 summation order). Only process 0 writes checkpoints.
    """
    optimizer = as_gradient_transformation(optimizer, op="fit")  # never an optax update taken for the new params
    x, y, eval_data = _check_fit_arguments(model, params, train_data, eval_data, epochs, batch_size, on_nonfinite)
    mesh = _resolve_mesh(mesh, devices, batch_size)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    steps = len(y) // batch_size
    params = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params)  # the step donates its inputs: not the caller's
    if model_state is None:
        model_state = _initial_state(model, params, x.shape[1:], "fit")
    model_state = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), model_state)
    run = _Run(params, optimizer.init(params), model_state)
    if resume:
        run = _restore(ckpt_path, run, key)
    saver = _Saver(ckpt_path, key=key, metadata=metadata, epochs=epochs, batch_size=batch_size, steps=steps)
    if epoch_callbacks is None:
        epoch_callbacks = () if quiet else (ConsoleLog(),)

    train_step = make_train_step(model, loss_fn, optimizer, mesh=mesh, with_state=True, augment=augment)
    evaluate_now = None
    if eval_data is not None:
        eval_loss_fn = loss_fn if eval_loss_fn is None else eval_loss_fn
        eval_step = make_eval_step(model, eval_loss_fn, with_state=True)

        def evaluate_now(p, s):
            return evaluate(model, p, eval_data, batch_size=eval_batch_size, loss_fn=eval_loss_fn, eval_step=eval_step, model_state=s)[:2]

    if mesh is not None:
        run.params, run.opt_state, run.model_state = parallel.replicate((run.params, run.opt_state, run.model_state), mesh)
    put = _placement(mesh, batch_size)
    t_start = time.perf_counter() - run.wall_offset

    with _DeferredSignals() as signals:
        while run.epoch < epochs:
            rate, epoch_time = _train_epoch(
                run, (x, y), train_step=train_step, put=put, key=key, batch_size=batch_size, steps=steps, epochs=epochs,
                saver=saver, signals=signals, on_nonfinite=on_nonfinite, callbacks=callbacks, quiet=quiet,
            )  # fmt: skip
            summary = _close_epoch(run, rate=rate, epoch_time=epoch_time, evaluate_now=evaluate_now, epochs=epochs, wall_time=lambda: time.perf_counter() - t_start)
            run.next_epoch()
            path = saver.save(run, 0)
            for callback in epoch_callbacks:
                callback(summary)
            if signals.signum is not None and run.epoch < epochs:  # a signal during evaluation: stop at the epoch boundary
                raise Interrupted(_stopped(signals.signum, run.epoch, 0, steps, path), signals.signum)
        return FitResult(run.params, run.history, run.model_state)
