"""Stopping a training run cleanly: SIGINT (Ctrl-C) and SIGTERM end it after the step in flight."""

from __future__ import annotations

import signal
import threading

__all__ = ["Interrupted", "DeferredSignals", "stopped_message"]


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT (Ctrl-C) or SIGTERM after the step in flight, with a checkpoint saved."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class DeferredSignals:
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


def stopped_message(signum, epoch, done, steps, path) -> str:
    """Where a signal stopped the run (``epoch`` 0-based, ``done`` steps of ``steps``), and the checkpoint if one
    was saved."""
    where = f"{signal.Signals(signum).name} at epoch {epoch + 1}, after step {done} of {steps}"
    return where + (f": checkpoint saved to {path}" if path else "")
