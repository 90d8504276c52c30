"""`Counter`: progress through a known number of items, for a terminal and for a log alike.

On a terminal it is a tqdm bar. In a log (stderr not a terminal: a Kubernetes Job running `prepare`, a file)
a bar's carriage returns make one unreadable line, so it writes plain lines instead, at most every
`every_seconds` and at the end:

    encoding audio: 120/2000 clips, 3.1 clips/s, eta 0:10:06

`format_eta` is shared with the training's progress lines (`trainer.train.progress`).
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import IO, Any

log = logging.getLogger("trainer.progress")


def format_eta(seconds: float) -> str:
    """Seconds as H:MM:SS (a day or more as `1d 02:03:04`)."""
    text = str(datetime.timedelta(seconds=round(max(seconds, 0.0))))
    return text.replace(" days, ", "d ").replace(" day, ", "d ")


class Counter:
    """`advance()` once per item; `close()` at the end (also as a context manager)."""

    def __init__(self, total: int, what: str, unit: str, *, stream: IO[str] | None = None,
                 every_seconds: float = 10.0) -> None:
        self.total, self.what, self.unit, self.every = total, what, unit, every_seconds
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.started = self.last_line = time.monotonic()
        self.bar: Any = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit, file=self.stream, dynamic_ncols=True)
        else:
            log.info("%s", self.line())  # that it started, and how much there is

    def line(self) -> str:
        """`encoding audio: 120/2000 clips, 3.1 clips/s, eta 0:10:06` (rate and eta once an item is done)."""
        text = f"{self.what}: {self.done}/{self.total} {self.unit}s"
        elapsed = time.monotonic() - self.started
        if self.done and elapsed > 0:
            rate = self.done / elapsed
            text += f", {rate:.3g} {self.unit}s/s, eta {format_eta((self.total - self.done) / rate)}"
        return text

    def advance(self, n: int = 1) -> None:
        """Count `n` items done: the bar moves, or a line is logged every `every_seconds` seconds."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.last_line >= self.every and self.done < self.total:
            self.last_line = time.monotonic()
            log.info("%s", self.line())

    def close(self) -> None:
        """End the bar, or log the final count."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        else:
            log.info("%s", self.line())

    def __enter__(self) -> Counter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
