"""A trainer command run in the background, for tests that act on it at a chosen moment of its run.

Slow tests start `python -m trainer train` or `launch`, wait until the run reaches a point (a line in its
log, a file on disk), then signal or kill it. `trainer_process` does the starting, the waiting and the
cleaning up in one place, so that a test that fails while waiting says what it waited for and shows the
end of the log, and no test leaves a training process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")
TAIL = 3000  # characters of the log shown when a wait fails


class TrainerProcess:
    """A running `python -m trainer <command>` whose stdout and stderr go to `log`."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, own_group: bool) -> None:
        self.proc, self.log, self.own_group = proc, log, own_group

    def log_text(self) -> str:
        return self.log.read_text()

    def wait_for(self, condition: Callable[[], T], what: str, *, timeout: float, interval: float) -> T:
        """Poll `condition` every `interval` seconds while the process runs; return its first true value.

        Fails the test, with the end of the log, when the process ends or `timeout` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self._fail(f"the process ended (exit code {code}) while waiting for {what}")
            if time.monotonic() >= deadline:
                self._fail(f"gave up waiting for {what} after {timeout:g} s")
            found = condition()
            if found:
                return found
            time.sleep(interval)

    def wait_for_log(self, text: str, *, count: int = 1, timeout: float, interval: float) -> None:
        """`wait_for` the log to hold `text` at least `count` times."""
        what = f"{text!r} in the log" if count == 1 else f"{text!r} {count} times in the log"
        self.wait_for(lambda: self.log_text().count(text) >= count, what, timeout=timeout, interval=interval)

    def _fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}; the end of {self.log}:\n{self.log_text()[-TAIL:]}")

    def kill(self) -> None:
        """SIGKILL the process and every process below it (torchrun and its ranks start sessions of their
        own, so a process group does not reach them), and its whole group when it has one of its own."""
        from trainer.launch.supervise import children_of

        below: list[int] = []
        if self.proc.poll() is None:  # once reaped, its pid may belong to another process: no tree to walk
            frontier = [self.proc.pid]
            while frontier:  # collected before any kill: an orphan's parent changes, and killing the group
                frontier = [c for pid in frontier for c in children_of(pid)]  # first would reap the leader
                below += frontier
        if self.own_group:  # what is left of the group, even once its leader is gone
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in [*([self.proc.pid] if self.proc.poll() is None else []), *below]:
            with suppress(ProcessLookupError):  # already gone
                os.kill(pid, signal.SIGKILL)


def launch_env(base_args: dict[str, str], tmp_path: Path, *, termination_log: str = "termination-log",
               **over: str) -> dict[str, str]:
    """The environment of a real `launch`: the option values as variables (nothing from the host's), one
    OpenMP thread per rank, and the termination log in `tmp_path`."""
    from tests.conftest import clean_env

    env = clean_env(**{k.upper(): v for k, v in (base_args | over).items()})
    env.update(OMP_NUM_THREADS="1", TERMINATION_LOG=str(tmp_path / termination_log))
    return env


def launch(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `python -m trainer launch` to its end, output captured."""
    return subprocess.run([sys.executable, "-m", "trainer", "launch", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def rank_pids(launcher: int) -> dict[int, int]:
    """Global rank -> pid of the training processes of a `launch` (torchrun's children), from their RANK."""
    from trainer.launch.supervise import children_of

    (torchrun,) = children_of(launcher)
    found = {}
    for pid in children_of(torchrun):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        (rank,) = [int(v.split(b"=", 1)[1]) for v in environ if v.startswith(b"RANK=")]
        found[rank] = pid
    return found


@contextmanager
def trainer_process(command: str, env: dict[str, str], log: Path, *,
                    own_group: bool = False) -> Iterator[TrainerProcess]:
    """Start `python -m trainer <command>`; on the way out, kill whatever of it is left and reap it.

    Args:
        command: `train` or `launch`.
        env: The child's whole environment.
        log: File for its stdout and stderr (written from the start).
        own_group: Start it in a session of its own, so that `kill` also reaches the processes it starts
            that have left its process tree.
    """
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "trainer", command], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=own_group)
        process = TrainerProcess(proc, log, own_group)
        try:
            yield process
        finally:
            process.kill()
            proc.wait()


def torchrun_probe(probe: Path, env: dict[str, str], probe_dir: Path, nproc: int = 2) -> list[dict]:
    """Run a probe script under a real standalone `torchrun` and read what each rank wrote.

    Args:
        probe (`Path`):
            The script each rank runs; it writes `PROBE_DIR/rank<R>.json`.
        env (`dict[str, str]`):
            The ranks' environment (the trainer's options as variables); `PROBE_DIR` is added.
        probe_dir (`Path`):
            Where the ranks write their reports; created.
        nproc (`int`):
            Local ranks to start.

    Returns:
        `list[dict]`: each rank's report, in rank order.
    """
    probe_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
            "--master_port=0", "--standalone", str(probe)]
    proc = subprocess.run(argv, env={**env, "PROBE_DIR": str(probe_dir)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-TAIL:] + proc.stderr[-TAIL:]
    return [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in range(nproc)]
