"""Signals seen by a thread of their own, for the one thing that must happen even while the main thread is stuck.

Python runs a signal handler only in the main thread, between bytecodes. A rank waiting in a collective
(gloo's all-reduce, a barrier) sits in C++ until the collective ends or `--ddp_timeout` passes, so its
handler, and the watchdog it would start, wait as long: a SIGTERM could not end the run within the pod's
grace period. The C part of Python's handler still runs at once, and writes the signal's number to the
wakeup file descriptor (`signal.set_wakeup_fd`); a thread reading that pipe learns of the signal at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections.abc import Callable, Collection

POLL_SECONDS = 0.2  # how soon the thread notices `stop`


class SignalWakeup:
    """Calls `on_signal(signum)` from a daemon thread for each of `signals` delivered while it is started.

    Only signals that have a Python handler reach the wakeup descriptor, so the handlers must be installed.
    The main thread's handler still runs as usual; `on_signal` must be safe to call from another thread and
    at any time (it only arms a timer here). `start` and `stop` must be called from the main thread.
    """

    def __init__(self, signals: Collection[int], on_signal: Callable[[int], None]) -> None:
        self.signals = {int(s) for s in signals}
        self.on_signal = on_signal
        self._fds: tuple[int, int] | None = None
        self._previous = -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Watch the signals from a thread, so they are seen while the main thread is blocked in C code."""
        if threading.current_thread() is not threading.main_thread() or self._fds is not None:
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # the C handler must never block on a full pipe
        try:
            self._previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except ValueError:  # not the main interpreter
            os.close(read_fd), os.close(write_fd)
            return
        self._fds = (read_fd, write_fd)
        self._thread = threading.Thread(target=self._read, args=(read_fd,), name="signal-wakeup", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Put back the previous wakeup descriptor and end the watching thread."""
        if self._fds is None:
            return
        read_fd, write_fd = self._fds
        self._fds = None
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(self._previous)
        os.close(write_fd)
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL_SECONDS + 1.0)
        os.close(read_fd)

    def _read(self, read_fd: int) -> None:
        # Polled rather than read until the end of the pipe: a child forked meanwhile (a data-loader worker)
        # holds the write end too, so closing ours need not end the pipe.
        while self._fds is not None:
            try:
                ready, _, _ = select.select([read_fd], [], [], POLL_SECONDS)
                if not ready:
                    continue
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in self.signals:
                    self.on_signal(signum)
