"""Progress of synthesis on stderr.

One line when a clip starts, a line every few seconds while it generates (frames so far, seconds of audio, elapsed
time), one when it ends. Plain lines, so a log file reads as well as a terminal; the command that prints them runs in
one process, so no rank needs to be chosen.

It is a transformers streamer (the `put`/`end` pair `generate` calls; transformers itself is not imported, so
a bad input is still named in a fraction of a second): `generate` hands it each step's tokens and it only counts
them, so a clip is the same with it as without it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any


def say(message: str, out: IO[str] | None = None) -> None:
    """One line on stderr (or `out`), prefixed with `synthesize:`, flushed at once."""
    print(f"synthesize: {message}", file=out or sys.stderr, flush=True)


class ClipProgress:
    """Counts the frames of one clip; `put` is called once with the prompt, then once per generated frame."""

    def __init__(self, label: str, max_frames: int, frame_rate: float, interval: float = 5.0,
                 out: IO[str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.max_frames, self.frame_rate = label, max_frames, frame_rate
        self.interval, self.out, self.clock = interval, out, clock
        self.frames, self._prompt_seen = 0, False
        self.start = self.last = clock()
        say(f"{label}: generating, at most {max_frames} frames", out)

    def _line(self, now: float) -> str:
        return (f"{self.label}: {self.frames}/{self.max_frames} frames ({self.frames / self.frame_rate:.1f} s of "
                f"audio) in {now - self.start:.1f} s")

    def put(self, value: Any) -> None:
        """Count a generated frame (generate's streamer hook); the first call hands over the prompt."""
        if not self._prompt_seen:  # generate's first call hands over the prompt itself
            self._prompt_seen = True
            return
        self.frames += 1
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            say(self._line(now), self.out)

    def end(self) -> None:
        """The last line of the clip, once generation ends (generate's streamer hook)."""
        say(self._line(self.clock()) + ", done", self.out)
