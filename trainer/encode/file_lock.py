"""An exclusive `flock` held for a block: one writer at a time of a file that several ranks, jobs or nodes share.

The kernel releases a `flock` when its holder dies, however it dies, so a killed builder never leaves a lock
behind; the lock file itself stays (an empty file), and is taken again by the next writer.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive `flock` on `path` (created, with its directory, if missing), held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
