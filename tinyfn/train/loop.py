"""The fit loop: keyed shuffling, a jitted step in a Python loop, evaluation, checkpoints, resume.

``fit`` is assembled from small pieces, each named for what it does: ``fit_args.check_fit_arguments`` (refuse what
cannot train, before any compilation), ``_start`` (the run's state, fresh, from given states, or resumed:
``run_state.restore``), ``run_state.Saver`` (the checkpoint at a position), ``_placement`` (batches onto the
device(s)), ``batches`` (the keyed order of arrays, or an iterable's batches, and the step keys), ``_train_epoch``
(the steps, non-finite losses, signals), ``_close_epoch`` (evaluation, history, the ``EpochSummary``), ``Watch``
(the best epoch, patience, the CSV log) and ``_epochs`` (the loop over them). It reports through callbacks and prints
nothing.

Arguments: ``optimizer`` is a gradient transformation (tinyfn's ``sgd``/``adam``/``adamw``/``chain`` or any optax
one); its state is checkpointed and resumed too. ``opt_state`` and ``model_state`` start a new run from given states
(a checkpoint's momentum, Adam's moments, batch norm's statistics: ``load_checkpoint(path, like=Checkpoint(params,
optimizer.init(params), model_state=state))``), checked against ``optimizer.init(params)`` and the model's initial
state: a mismatch is a ``ValueError`` naming the argument. ``augment`` (``(key, x) -> x``, e.g.
``augment.compose(random_crop(2), random_flip())``) runs on the device inside the compiled step; an
``augment.by_epoch({0: a, 5: b})`` schedule changes it at the epochs given (progressive resizing: ``augment.resize``).
``eval_loss_fn``
(default ``loss_fn``) is the loss reported on ``eval_data``. ``update_extra_args`` (``metrics -> dict``): keyword
arguments of the optimizer's update (optax's extra args), see ``make_train_step``. ``train_data`` may be an iterable
of ``(x, y)`` batches instead of arrays (``batch_size`` is then the iterable's, ``mesh`` is refused and labels are
not range-checked): ``tinyfn.train.batches`` says what shuffling and resuming mean then. The result, a
``FitResult``, unpacks as ``(params, history)``; ``result.model_state`` is the model's state after training,
``result.best_epoch`` the monitored metric's best epoch and ``result.stopped_early`` whether ``patience`` ended it.

Order and keys: each epoch visits ``len(train_data) // batch_size`` batches (the remainder is dropped) in the order
``permutation(fold_in(key, epoch))`` (an iterable of batches: one pass of it, in its order); the key of each step's
dropout (and augmentation) is ``fold_in(fold_in(key, epoch), batch)``. So a key reproduces a run exactly, and a
resumed run matches an uninterrupted one bit for bit. The step is compiled once for the whole run (once per stage of
an ``augment.by_epoch`` schedule).

Reporting: ``callbacks`` are called with a ``StepInfo`` after every step, ``epoch_callbacks`` with an ``EpochSummary``
after every epoch. Unless ``quiet``, a tqdm progress bar runs during each epoch and, when ``epoch_callbacks`` is not
given, ``ConsoleLog()`` writes one line per epoch to stdout. ``history`` maps ``epoch``, ``train_loss``,
``train_accuracy``, ``eval_loss``, ``eval_accuracy`` (on ``eval_data``, NaN without it), ``images_per_second``,
``epoch_time``, ``wall_time`` (seconds since the start) and ``skipped_steps`` to one value per epoch (and, with
``keep_best`` or ``patience``, ``best_epoch``: the best epoch so far). With a ``checkpoint_dir`` (or ``log_csv``) the
history is also written as CSV after every epoch, one row per epoch (rewritten from the history: a resumed run never
repeats a row): ``log_csv`` names the file (default ``METRICS_CSV`` in ``checkpoint_dir``; ``False``: none).

Best epoch and early stopping: ``keep_best`` writes ``BEST_NAME`` beside the checkpoint whenever an epoch improves
the monitored metric (``tinyfn.train.monitor``); ``patience`` stops the run after that many epochs without
improvement. Both are read from the history, so a resumed run is the same run: the best so far and the patience
count continue, and a run that stopped early stays stopped.

Checkpoints: the checkpoint's metadata (``metadata``, JSON) gets the model's ``model_record`` (its architecture and
input shape) unless it has a ``"model"`` entry or ``to_spec`` cannot describe the model, so ``load_model`` and ``python
-m tinyfn evaluate`` open it. With ``checkpoint_dir``, ``CHECKPOINT_NAME`` there is rewritten (atomically) after every
epoch, when a step's loss becomes NaN/Inf (then a ``FloatingPointError`` names the epoch and step: the saved params are
the last finite ones), and on ``KeyboardInterrupt`` (re-raised after saving, with a note naming the checkpoint).
``resume=True`` continues from that checkpoint; a checkpoint saved mid-epoch resumes only with the same ``batch_size``
and training data length (its batch index counts in those). ``on_nonfinite="skip"`` instead drops such steps (params
unchanged) and counts them in ``history["skipped_steps"]``. SIGINT (Ctrl-C) and SIGTERM stop training at the end of the
step in flight: the checkpoint is saved at that exact position and ``Interrupted`` (a ``KeyboardInterrupt`` whose
message says where) is raised; a second signal interrupts at once.

Data parallel: with ``mesh`` (a ``jax.sharding.Mesh`` with a ``"data"`` axis, e.g. ``tinyfn.train.data_mesh(8)``)
every batch is placed split over the devices, params, optimizer and model state are replicated and XLA all-reduces the
gradients (and batch norm's statistics, which are over the global batch); ``batch_size`` must divide by the device
count. Same seed and global batch, same result as on one device (up to float32 summation order). Only process 0 writes
checkpoints.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from tinyfn.losses import softmax_cross_entropy
from tinyfn.train import parallel
from tinyfn.train.augment import EpochSchedule
from tinyfn.train.checkpoint import CHECKPOINT_NAME
from tinyfn.train.evaluation import EvalResult, evaluate
from tinyfn.train.fit_args import check_fit_arguments, starting_states
from tinyfn.train.metrics_csv import METRICS_CSV, write_metrics_csv
from tinyfn.train.model_io import model_record
from tinyfn.train.monitor import BEST_NAME, Watch, check_monitor
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
    "BEST_NAME",
]


class FitResult(tuple):
    """What ``fit`` returns: unpacks as ``(params, history)``, as it always has; ``model_state`` holds the model's
    state after training (batch norm's running statistics; ``{}`` for a stateless model); ``best_epoch`` the
    monitored metric's best epoch (1-based; ``None`` without ``keep_best``/``patience``) and ``stopped_early``
    whether ``patience`` ended the run::

        params, history = fit(...)           # any model
        result = fit(...); result.model_state  # the state to evaluate a stateful model with
    """

    def __new__(cls, params, history, model_state, *, best_epoch=None, stopped_early=False):
        result = super().__new__(cls, (params, history))
        result.model_state, result.best_epoch, result.stopped_early = model_state, best_epoch, stopped_early
        return result

    params = property(lambda self: self[0])
    history = property(lambda self: self[1])


def _start(model, params, optimizer, source, key, opt_state, model_state, resume, ckpt_path) -> Run:
    """The run's state: ``params`` and the given (or fresh) model and optimizer states, checked and copied; or, with
    ``resume``, what the checkpoint at ``ckpt_path`` holds."""
    if resume and opt_state is not None:
        raise ValueError(
            "fit: opt_state= starts a new run from given states, resume=True continues the checkpoint's own: "
            "pass one of them"
        )
    states = starting_states(model, params, optimizer, source.x_shape, opt_state=opt_state, model_state=model_state)
    run = Run(*states)
    if resume:
        run = restore(ckpt_path, run, key, batch_size=source.batch_size, examples=source.examples)
    return run


def _with_model_record(metadata, model, x_shape):
    """``metadata`` with the model's record (``model_record``: what ``load_model`` rebuilds it from) unless it has
    one; as it is for a model ``to_spec`` cannot describe (a layer tinyfn does not know)."""
    metadata = dict(metadata or {})
    if "model" not in metadata:
        try:
            metadata["model"] = model_record(model, x_shape)
        except (TypeError, ValueError):
            pass
    return metadata


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


def _global_step(run: Run, batch: int, steps) -> int:
    return run.epoch * steps + batch if steps else batch  # an iterable without len: the step within the epoch


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
        of = f" of {steps} (global step {run.epoch * steps + batch + 1})" if steps else ""
        raise FloatingPointError(
            f"loss became {float(m['loss'])} at epoch {run.epoch + 1}, step {batch + 1}{of}{where}"
        )
    return finite


def _report(run: Run, m, batch, finite, *, bar, steps, callbacks, seen, t_epoch):
    """The step's progress bar update and its ``StepInfo`` to each callback."""
    bar.update(1)
    if run.count and (run.count % 20 == 0 or batch + 1 == steps):
        rate = seen / max(time.perf_counter() - t_epoch, 1e-9)
        mean_loss, mean_accuracy = run.loss_sum / run.count, run.accuracy_sum / run.count
        bar.set_postfix(loss=f"{mean_loss:.4f}", acc=f"{mean_accuracy:.4f}", img_s=f"{rate:,.0f}", refresh=False)
    info = StepInfo(run.epoch, batch, _global_step(run, batch, steps), float(m["loss"]), float(m["accuracy"]), finite)
    for callback in callbacks:
        callback(info)


def _train_epoch(run: Run, source, *, train_step, put, key, epochs, saver, signals, on_nonfinite, callbacks, quiet):
    """Take the epoch's remaining steps; on a non-finite loss, a signal or Ctrl-C save the position and raise."""
    steps = source.steps
    first, t_epoch, seen = run.batch, time.perf_counter(), 0
    batches = source.epoch(key, run.epoch, first)
    bar = progress_bar(total=steps, initial=first, desc=f"epoch {run.epoch + 1}/{epochs}", quiet=quiet)
    host = next(batches, None)
    staged = put(*host) if host is not None else None  # staged ahead: copied while the step before it runs
    batch = first
    try:
        while staged is not None:
            run.params, run.model_state, run.opt_state, m = train_step(
                run.params, run.model_state, run.opt_state, *staged
            )
            seen += len(host[1])
            host = next(batches, None)
            staged = put(*host) if host is not None else None
            m = jax.device_get(m)
            finite = _count_step(run, m, batch, steps=steps, saver=saver, on_nonfinite=on_nonfinite)
            _report(run, m, batch, finite, bar=bar, steps=steps, callbacks=callbacks, seen=seen, t_epoch=t_epoch)
            batch += 1
            if signals.signum is not None:
                path = saver.save(run, batch)
                raise Interrupted(stopped_message(signals.signum, run.epoch, batch, steps or "?", path), signals.signum)
    except KeyboardInterrupt as exc:
        if not isinstance(exc, Interrupted):
            stepped = run.count and not any(a.is_deleted() for a in jax.tree_util.tree_leaves(run.params))
            done = batch + 1 if stepped else batch
            path = saver.save(run, done)
            if path:
                exc.add_note(
                    f"interrupted at epoch {run.epoch + 1}, step {done}{f' of {steps}' if steps else ''}: "
                    f"checkpoint saved to {path}"
                )
        raise
    finally:
        bar.close()
    return seen / max(time.perf_counter() - t_epoch, 1e-9), time.perf_counter() - t_epoch


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


def _close(run: Run, watch: Watch, saver: Saver):
    """The epoch's checkpoint, the best one when the epoch is the best so far, and the CSV log (process 0 only)."""
    is_best = watch.mark(run)
    path = saver.save(run, 0)
    if is_best and watch.best_path is not None:
        saver.save(run, 0, path=watch.best_path)
    if watch.csv_path is not None and parallel.is_writer():
        write_metrics_csv(watch.csv_path, run.history)
    return path


def _epochs(run: Run, source, *, epochs, saver, evaluate_now, epoch_callbacks, watch, step_kw) -> FitResult:
    """Train the remaining epochs, each closed by an evaluation, a checkpoint and the epoch callbacks."""
    t_start = time.perf_counter() - run.wall_offset
    watch.mark(run)
    stopped = watch.exhausted(run)  # a resumed run that had already stopped early trains no more
    with DeferredSignals() as signals:
        while run.epoch < epochs and not stopped:
            kw = dict(step_kw, train_step=step_kw["train_steps"](run.epoch))
            del kw["train_steps"]
            rate, epoch_time = _train_epoch(run, source, epochs=epochs, saver=saver, signals=signals, **kw)
            wall_time = lambda: time.perf_counter() - t_start  # noqa: E731
            summary = _close_epoch(
                run, rate=rate, epoch_time=epoch_time, evaluate_now=evaluate_now, epochs=epochs, wall_time=wall_time
            )
            run.next_epoch()
            stopped = watch.exhausted(run)
            path = _close(run, watch, saver)
            for callback in epoch_callbacks:
                callback(summary)
            if signals.signum is not None and run.epoch < epochs:  # a signal during evaluation: stop at the boundary
                raise Interrupted(
                    stopped_message(signals.signum, run.epoch, 0, source.steps or "?", path), signals.signum
                )
        best = run.history["best_epoch"][-1] if run.history.get("best_epoch") else None
        return FitResult(run.params, run.history, run.model_state, best_epoch=best, stopped_early=stopped)


def _train_steps(augment, *step_args, **step_kw):
    """``epoch -> train step``: one step for the run, or with an ``augment.EpochSchedule`` one per stage (each
    made when first asked for; compiled when first called)."""
    schedule = augment if isinstance(augment, EpochSchedule) else EpochSchedule((0,), (augment,))

    @functools.cache
    def step_of(stage):
        return make_train_step(*step_args, with_state=True, augment=schedule.augmentations[stage], **step_kw)

    step_of(0)  # the arguments checked now, before any epoch
    return lambda epoch: step_of(schedule.stage(epoch))


def fit(
    model,
    params,
    train_data,
    *,
    epochs: int,
    batch_size: int | None = None,
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
    opt_state=None,
    keep_best: str | None = None,
    patience: int | None = None,
    log_csv=None,
    update_extra_args=None,
) -> FitResult:
    """Train ``model`` from ``params`` with mini-batch ``optimizer`` steps; returns ``(params, history)``.

    ``train_data``: arrays ``(images, labels)`` or an iterable of ``(x, y)`` batches; ``opt_state``/``model_state``:
    the states to start from (e.g. a checkpoint's), checked. Every argument: ``tinyfn.train.loop``'s docstring.
    """
    optimizer = as_gradient_transformation(optimizer, op="fit")  # never an optax update taken for the new params
    source, eval_data = check_fit_arguments(
        model, params, train_data, eval_data, epochs, batch_size, on_nonfinite, mesh, resume
    )
    metric = check_monitor(keep_best, patience, has_eval=eval_data is not None, checkpoint_dir=checkpoint_dir)
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    ckpt_path = directory / CHECKPOINT_NAME if directory is not None else None
    run = _start(model, params, optimizer, source, key, opt_state, model_state, resume, ckpt_path)
    metadata = _with_model_record(metadata, model, source.x_shape)
    saver = Saver(ckpt_path, key=key, metadata=metadata, epochs=epochs, source=source)
    train_steps = _train_steps(augment, model, loss_fn, optimizer, mesh=mesh, update_extra_args=update_extra_args)
    csv_path = directory / METRICS_CSV if log_csv is None and directory is not None else log_csv or None
    step_kw = dict(train_steps=train_steps, key=key, on_nonfinite=on_nonfinite, callbacks=callbacks, quiet=quiet)
    return _epochs(
        _replicated(run, mesh),
        source,
        epochs=epochs,
        saver=saver,
        evaluate_now=_evaluator(model, eval_data, loss_fn if eval_loss_fn is None else eval_loss_fn, eval_batch_size),
        epoch_callbacks=(() if quiet else (ConsoleLog(),)) if epoch_callbacks is None else epoch_callbacks,
        watch=Watch(metric, directory / BEST_NAME if keep_best else None, patience, csv_path),
        step_kw=dict(step_kw, put=_placement(mesh, source.batch_size)),
    )
