"""Stopping cleanly on a signal: SIGTERM (a batch scheduler, a container stop, `timeout`, a Ray worker shutdown)
and SIGHUP (a closed terminal) unwind the program like Ctrl-C does.

The handler raises `Stopped` in the main thread; every temporary file and folder is removed by the `finally`
blocks it passes through (`t2vzero.video.atomic_write` and the frame-folder writer), so nothing half-written
is left behind, and the command exits with the conventional code 128 + the signal's number.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CAUGHT = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class Stopped(BaseException):
    """Raised by a caught signal. A BaseException like KeyboardInterrupt, so that `except Exception` handlers
    on the way up (loaders turning library errors into one-line messages) do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = CAUGHT) -> Iterator[None]:
    """Within the block, `signals` raise `Stopped` in the main thread; the previous handlers come back after.

    Only the first signal raises: later ones are ignored, so that the cleanup the first one started (removing
    temporary files) is not itself cut short. A signal that lands in a callback (a weak reference's, such as
    the import system's module locks, or a `__del__`) raises where Python drops exceptions; it is delivered
    again, to be raised where it unwinds the program. Outside the main thread (where Python cannot handle
    signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}
    previous_hook = sys.unraisablehook

    def handler(signum: int, _frame: object) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    def dropped(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Stopped):
            signum = unraisable.exc_value.signum
            signal.signal(signum, handler)
            # Sent again a moment later from another thread, it is handled by the main thread once it is back in
            # code where an exception unwinds (raised now, in the hook, it would be dropped again; landing in a
            # callback again, it comes back here).
            timer = threading.Timer(0.05, os.kill, args=(os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return
        previous_hook(unraisable)

    for s in signals:
        signal.signal(s, handler)
    sys.unraisablehook = dropped
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for s, h in previous.items():
            signal.signal(s, h)


def stop_code(stop: BaseException) -> int:
    """The exit code of a stop: 130 for Ctrl-C (KeyboardInterrupt), 128 + the signal for `Stopped`."""
    return stop.exit_code if isinstance(stop, Stopped) else INTERRUPTED
