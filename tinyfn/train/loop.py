"""The fit loop: keyed shuffling, a jitted step in a Python loop, evaluation, progress, checkpoints, resume."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

import jax
import jax.numpy as jnp

from tinyfn.losses import softmax_cross_entropy
from tinyfn.train.checkpoint import load_checkpoint, save_checkpoint
from tinyfn.train import parallel
from tinyfn.train.step import make_eval_step, make_train_step

__all__ = ["fit", "evaluate", "StepInfo", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.safetensors"
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


class StepInfo(NamedTuple):
    """What a callback sees after each step."""

    epoch: int  # 0-based
    batch: int  # 0-based, within the epoch
    step: int  # global, counting from 0
    loss: float
    accuracy: float


def evaluate(model, params, data, *, batch_size: int = 1000, loss_fn=softmax_cross_entropy, eval_step=None):
    """Mean loss, accuracy and the predictions of ``model`` on ``data = (x, y)``, in batches."""
    x, y = data
    n = len(y)
    eval_step = eval_step or make_eval_step(model, loss_fn)
    loss = correct = 0.0
    preds = []
    for start in range(0, n, batch_size):
        m = eval_step(params, jnp.asarray(x[start : start + batch_size]), jnp.asarray(y[start : start + batch_size]))
        m = jax.device_get(m)
        size = min(batch_size, n - start)
        loss += float(m["loss"]) * size
        correct += float(m["accuracy"]) * size
        preds.append(np.asarray(m["predictions"]))
    return loss / n, correct / n, np.concatenate(preds)


def _check_data(name, data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (images, labels), got {type(data).__name__}")
    x, y = data
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
    return np.asarray(x), np.asarray(y)


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
    eval_batch_size: int = 1000,
    mesh=None,
    devices=None,
    on_nonfinite: str = "stop",
):
    """Train ``model`` from ``params`` with mini-batch ``optimizer`` steps; returns ``(params, history)``.

    Each epoch visits ``len(train_data) // batch_size`` batches (the remainder is
    dropped) in the order ``permutation(fold_in(key, epoch))``; the key of each
    step's dropout is ``fold_in(fold_in(key, epoch), batch)``. So a key
    reproduces a run exactly, and a resumed run matches an uninterrupted one
    bit for bit.

    ``history`` maps ``epoch``, ``train_loss``, ``train_accuracy``, ``eval_loss``,
    ``eval_accuracy``, ``images_per_second``, ``epoch_time`` and ``wall_time``
    (seconds since the start) to one value per epoch.

    With ``checkpoint_dir``, ``checkpoint.safetensors`` there is rewritten
    (atomically) after every epoch, when a step's loss becomes NaN/Inf (then a
    ``FloatingPointError`` names the epoch and step: the saved params are the last
    finite ones), and on ``KeyboardInterrupt`` (re-raised after saving).
    ``resume=True`` continues from that checkpoint. ``metadata`` (JSON) is stored
    in it. ``on_nonfinite="skip"`` instead drops such steps (params unchanged)
    and counts them in ``history["skipped_steps"]``.

    SIGINT (Ctrl-C) and SIGTERM stop training at the end of the step in flight:
    the checkpoint is saved at that exact position and ``Interrupted`` (a
    ``KeyboardInterrupt``) is raised; a second signal interrupts at once.

    Data parallel: with ``mesh`` (a ``jax.sharding.Mesh`` with a ``"data"``
    axis) or ``devices`` (a count or a list, see ``tinyfn.train.data_mesh``),
    every batch is placed split over the devices, params and optimizer state are
    replicated and XLA all-reduces the gradients; ``batch_size`` must divide by
    the device count. Same seed and global batch, same result as on one device
    (up to float32 summation order). Only process 0 writes checkpoints.
    """
    x, y = _check_data("train_data", train_data)
    if eval_data is not None:
        eval_data = _check_data("eval_data", eval_data)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(y):
        raise ValueError(f"batch_size must be an int between 1 and the number of training examples ({len(y)}), got {batch_size!r}")
    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
    _check_labels(model, params, x, y, "train_data")
    if eval_data is not None:
        _check_labels(model, params, *eval_data, "eval_data")
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if devices is not None:
        if mesh is not None:
            raise ValueError("give mesh or devices, not both")
        mesh = parallel.data_mesh(devices)
    if mesh is not None:
        parallel.check_batch_size(mesh, batch_size)
    steps = len(y) // batch_size
    params = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params)  # the step donates its inputs: not the caller's
    opt_state = optimizer.init(params)
    history = {k: [] for k in HISTORY_KEYS}
    start_epoch, start_batch, partial = 0, 0, (0.0, 0.0, 0)
    wall_offset = 0.0
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise FileNotFoundError(f"resume=True but there is no checkpoint to resume from at {ckpt_path}")
        ckpt = load_checkpoint(ckpt_path, like=params)
        pos = ckpt.metadata.get("position") or {}
        if ckpt.opt_state is None or ckpt.key is None or not pos:
            raise ValueError(f"{ckpt_path} holds no training position (optimizer state, key, epoch); it cannot be resumed")
        if not np.array_equal(jax.random.key_data(ckpt.key), jax.random.key_data(key)):
            raise ValueError(f"{ckpt_path} was written by a run with another key (seed); resume with the same seed")
        params, opt_state = ckpt.params, jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(opt_state), [jnp.asarray(a) for a in jax.tree_util.tree_leaves(ckpt.opt_state)])
        start_epoch, start_batch = pos["epoch"], pos["batch"]
        partial = (pos["loss_sum"], pos["accuracy_sum"], pos["count"])
        history = {k: list(ckpt.metadata.get("history", {}).get(k, [])) for k in HISTORY_KEYS}
        wall_offset = history["wall_time"][-1] if history["wall_time"] else 0.0

    def save(epoch, batch, sums):
        if ckpt_path is None or not parallel.is_writer():
            return None
        position = {"epoch": epoch, "batch": batch, "loss_sum": sums[0], "accuracy_sum": sums[1], "count": sums[2]}
        meta = dict(metadata or {}, position=position, history=history, epochs=epochs, batch_size=batch_size)
        local = lambda tree: jax.tree_util.tree_map(_one_copy, tree)  # noqa: E731
        return save_checkpoint(ckpt_path, local(params), opt_state=jax.tree_util.tree_leaves(local(opt_state)), step=epoch * steps + batch, key=key, metadata=meta)

    train_step = make_train_step(model, loss_fn, optimizer, mesh=mesh)
    eval_step = make_eval_step(model, loss_fn) if eval_data is not None else None
    if mesh is not None:
        params, opt_state = parallel.replicate((params, opt_state), mesh)
        rows = parallel.local_rows(batch_size)  # this process's share of each global batch
        rep = parallel.replicated(mesh)
        put = lambda xb, yb, kb: (*parallel.put_batch(mesh, xb[rows], yb[rows]), jax.device_put(kb, rep))  # noqa: E731
    else:
        put = lambda xb, yb, kb: jax.device_put((xb, yb, kb))  # noqa: E731  (one transfer call per step)
    bar_cls = _progress_bar(quiet)
    t_start = time.perf_counter() - wall_offset

    with _DeferredSignals() as signals:
        for epoch in range(start_epoch, epochs):
            ekey = jax.random.fold_in(key, epoch)
            order = np.asarray(jax.random.permutation(ekey, len(y)))
            step_keys = np.asarray(jax.random.key_data(jax.vmap(lambda b: jax.random.fold_in(ekey, b))(jnp.arange(steps))))

            def batch_at(b):  # staged ahead: copied to the device(s) while the step before it runs
                idx = order[b * batch_size : (b + 1) * batch_size]
                return put(x[idx], y[idx], step_keys[b])

            first = start_batch if epoch == start_epoch else 0
            loss_sum, acc_sum, count = partial if epoch == start_epoch else (0.0, 0.0, 0)
            skipped = 0
            bar = bar_cls(total=steps, initial=first, desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=False)
            t_epoch = time.perf_counter()
            batch = first
            staged = batch_at(first) if first < steps else None
            try:
                for batch in range(first, steps):
                    params, opt_state, m = train_step(params, opt_state, *staged)
                    staged = batch_at(batch + 1) if batch + 1 < steps else None
                    m = jax.device_get(m)
                    if not m["finite"] and on_nonfinite == "skip":  # the step left params and optimizer state as they were
                        skipped += 1
                        if not quiet:
                            print(f"\nskipped step {batch + 1} of epoch {epoch + 1}: loss {float(m['loss'])}", file=sys.stderr)
                    elif not m["finite"]:
                        path = save(epoch, batch, (loss_sum, acc_sum, count))
                        where = f"; the last finite params were saved to {path}" if path else ""
                        raise FloatingPointError(
                            f"loss became {float(m['loss'])} at epoch {epoch + 1}, step {batch + 1} of {steps} "
                            f"(global step {epoch * steps + batch + 1}){where}"
                        )
                    else:
                        loss_sum, acc_sum, count = loss_sum + float(m["loss"]), acc_sum + float(m["accuracy"]), count + 1
                    bar.update(1)
                    if count and (count % 20 == 0 or batch == steps - 1):
                        rate = (batch + 1 - first) * batch_size / max(time.perf_counter() - t_epoch, 1e-9)
                        bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{acc_sum / count:.4f}", img_s=f"{rate:,.0f}", refresh=False)
                    for callback in callbacks:
                        callback(StepInfo(epoch, batch, epoch * steps + batch, float(m["loss"]), float(m["accuracy"])))
                    if signals.signum is not None:
                        bar.close()
                        path = save(epoch, batch + 1, (loss_sum, acc_sum, count))
                        raise Interrupted(_stopped(signals.signum, epoch, batch + 1, steps, path, quiet), signals.signum)
            except Interrupted:
                raise
            except KeyboardInterrupt:
                bar.close()
                done = batch + 1 if count and not any(a.is_deleted() for a in jax.tree_util.tree_leaves(params)) else batch
                path = save(epoch, done, (loss_sum, acc_sum, count))
                if path and not quiet:
                    print(f"\ninterrupted at epoch {epoch + 1}, step {done} of {steps}: checkpoint saved to {path}", file=sys.stderr)
                raise
            bar.close()
            epoch_time = time.perf_counter() - t_epoch
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(loss_sum / count if count else float("nan"))
            history["train_accuracy"].append(acc_sum / count if count else float("nan"))
            history["skipped_steps"].append(skipped)
            history["images_per_second"].append((steps - first) * batch_size / epoch_time)
            history["epoch_time"].append(epoch_time)
            if eval_data is not None:
                el, ea, _ = evaluate(model, params, eval_data, batch_size=eval_batch_size, loss_fn=loss_fn, eval_step=eval_step)
            else:
                el = ea = float("nan")
            history["eval_loss"].append(el)
            history["eval_accuracy"].append(ea)
            history["wall_time"].append(time.perf_counter() - t_start)
            path = save(epoch + 1, 0, (0.0, 0.0, 0))
            if not quiet:
                evals = f" | eval loss {el:.4f} acc {ea:.4f}" if eval_data is not None else ""
                print(
                    f"epoch {epoch + 1}/{epochs}: train loss {history['train_loss'][-1]:.4f} acc {history['train_accuracy'][-1]:.4f}{evals}"
                    f" | {history['images_per_second'][-1]:,.0f} img/s | {epoch_time:.1f} s" + (f" | {skipped} steps skipped" if skipped else ""),
                    flush=True,
                )
            if signals.signum is not None and epoch + 1 < epochs:  # a signal during evaluation: stop at the epoch boundary
                raise Interrupted(_stopped(signals.signum, epoch + 1, 0, steps, path, quiet), signals.signum)
        return params, history


def _stopped(signum, epoch, done, steps, path, quiet) -> str:
    message = f"{signal.Signals(signum).name} at epoch {epoch + 1}, after step {done} of {steps}" + (f": checkpoint saved to {path}" if path else "")
    if not quiet:
        print(f"\n{message}", file=sys.stderr)
    return message


def _check_labels(model, params, x, y, name):
    """Integer labels must index the model's outputs: out-of-range ones would train on garbage silently."""
    if not np.issubdtype(y.dtype, np.integer) or len(y) == 0:
        return
    out = jax.eval_shape(lambda p, a: model.apply(p, a), params, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
    if len(out.shape) != 2:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= out.shape[1]:
        bad = int(np.argmax((y < 0) | (y >= out.shape[1])))
        raise ValueError(f"{name}: labels must be in 0..{out.shape[1] - 1} (the model has {out.shape[1]} outputs), got {int(y[bad])} at index {bad}")


def _one_copy(a):
    """A replicated array's copy on this process's first device (multi-host safe), anything else as it is."""
    return a.addressable_data(0) if isinstance(a, jax.Array) and len(a.sharding.device_set) > 1 else a


def _progress_bar(quiet: bool):
    if quiet:
        return _NoBar
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are a nicety
        return _NoBar
    return lambda **kw: tqdm(mininterval=0.5, dynamic_ncols=True, **kw)


class _NoBar:
    def __init__(self, **kwargs):
        pass

    def update(self, n=1):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass
