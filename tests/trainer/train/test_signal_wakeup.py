"""The wakeup thread learns of a signal at once, from another thread than the main one, and only of the
signals it watches; stopping it puts the previous wakeup descriptor back."""

from __future__ import annotations

import os
import signal
import threading
import time

from trainer.train.signal_wakeup import SignalWakeup


def test_the_wakeup_thread_sees_a_watched_signal_and_stop_restores_the_previous_descriptor() -> None:
    seen: list[tuple[int, str]] = []
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(before)
    wakeup = SignalWakeup([signal.SIGUSR1], lambda s: seen.append((s, threading.current_thread().name)))
    try:
        wakeup.start()
        os.kill(os.getpid(), signal.SIGUSR2)  # not watched
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [(signal.SIGUSR1, "signal-wakeup")]
    finally:
        wakeup.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert signal.set_wakeup_fd(before) == before
