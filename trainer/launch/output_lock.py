"""One launcher per output directory.

A second job pointed at the same OUTPUT_DIR would interleave its checkpoints and attempt ledger with the first one's.

The launcher that keeps the ledger (node 0) takes an exclusive `flock` on `OUTPUT_DIR/launch.lock` and holds
it until it exits. The kernel releases a `flock` when its holder dies, however it dies, so the lock of a
SIGKILLed or OOM-killed pod never blocks the pod that replaces it; there is no stale lock file to clean up.
The file also says who holds it (host, pid, start time), so that a refused launcher can name it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "launch.lock"


class OutputInUse(Exception):
    """Another live launcher holds the output directory; the message names it."""


class OutputLock:
    """The lock of one output directory; `acquire` raises `OutputInUse`, `release` (or exit) lets it go."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when the directory cannot hold one.

        A directory that is not writable is for the preflight and the ledger to report.

        Raises:
            OutputInUse: A live launcher holds the lock.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputInUse(f"{self.path.parent} is in use by another launcher ({holder}; it holds "
                              f"{self.path}): two runs writing one output directory would mix their "
                              "checkpoints; stop that run or give this one its own OUTPUT_DIR") from None
        except OSError:  # a filesystem without flock: run without the guard rather than not at all
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode() + b"\n")
        self._fd = fd
        return True

    def release(self) -> None:
        """Let another launcher have the output directory."""
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def _holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"host {data['host']}, pid {data['pid']}, since {data['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
