"""Run the launcher's one child the way a container's main process must: signals passed on, orphans reaped.

In a container the launcher is PID 1, and Kubernetes and `docker stop` signal it alone: `Supervisor`
passes the signal on so that the pod's grace period is the only deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

FORWARDED = (signal.SIGTERM, signal.SIGINT)
POLL_SECONDS = 0.1
# torchrun notices its workers have exited within a second and ends by itself; it is signalled only if it
# is still there this long after (with restarts allowed it would otherwise start new workers).
FOLLOW_UP_SECONDS = 5.0


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc (Linux; empty elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == pid and state != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie waiting for its parent to reap it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


class Supervisor:
    """Start `argv`, pass SIGTERM/SIGINT on, wait, and return its exit code (128 + N if killed by signal N).

    SIGTERM and SIGINT go on to the training processes themselves (torchrun's children), not to torchrun:
    torchrun answers a signal by killing its workers 30 seconds later whatever they are doing, which would cut
    the checkpoint of a large model short; the pod's grace period must be the only deadline. Once those
    processes have exited, torchrun gets the signal too, so that it restarts nothing. The child runs in a
    session of its own, so a terminal's Ctrl-C reaches the launcher only and takes the same path.

    Args:
        argv (`Sequence[str]`):
            The command to run.
        env (`Mapping[str, str]`):
            Its environment.
        to_children (`bool`):
            Send signals to the child's own children (torchrun's workers) rather than to the child; the
            child itself gets them once those have exited, or at once if it has no children yet.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], *, to_children: bool) -> None:
        self.argv, self.env, self.to_children = list(argv), dict(env), to_children
        self.received: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._signalled: set[int] = set()
        self._child_signalled = False
        self._gone_since: float | None = None

    def run(self) -> int:
        """Run the child in its own session and forward signals to it until it ends; its exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in FORWARDED}
        try:
            self._proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
            if self.received is not None:  # the signal came while the child was starting
                self._on_signal(self.received, None)
            return self._wait(self._proc)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received = self.received or signum
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        targets = children_of(proc.pid) if self.to_children else []
        if not targets:
            targets, self._child_signalled = [proc.pid], True
        name = signal.Signals(signum).name
        os.write(2, f"higgs-audio-trainer launch: got {name}; passing it to pid {', '.join(map(str, targets))}\n"
                 .encode())
        for pid in targets:
            _kill(pid, signum)
        self._signalled.update(targets)

    def _wait(self, proc: subprocess.Popen[bytes]) -> int:
        """Wait for the child.

        As PID 1 the launcher also reaps orphaned processes, which would otherwise stay zombies.
        """
        reap_all = os.getpid() == 1
        while True:
            pid, status = os.waitpid(-1 if reap_all else proc.pid, os.WNOHANG)
            if pid == proc.pid:
                code = os.waitstatus_to_exitcode(status)
                proc.returncode = code
                return 128 - code if code < 0 else code
            if pid == 0:
                self._follow_up(proc)
                time.sleep(POLL_SECONDS)
            # any other pid: an orphan reaped (we are PID 1); look again at once

    def _follow_up(self, proc: subprocess.Popen[bytes]) -> None:
        """Some time after every process the signal went to has exited, pass it to the child too (torchrun)."""
        if self.received is None or self._child_signalled or not self._signalled:
            return
        if any(_alive(pid) for pid in self._signalled):
            return
        now = time.monotonic()
        self._gone_since = self._gone_since or now
        if now - self._gone_since >= FOLLOW_UP_SECONDS:
            self._child_signalled = True
            _kill(proc.pid, self.received)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        os.kill(pid, signum)
