"""Why a process ended: each rank tells the launcher, and the launcher tells Kubernetes.

`torchrun` reports every failed worker group with exit code 1, so a configuration error (2) or a data
error (3) found inside a rank would reach the operator as an unexpected failure. The launcher
therefore makes one directory per launch and passes it in `HIGGS_TRAINER_OUTCOME_DIR`; every process of
`higgs-audio-trainer` writes its exit code and a one-line reason there (`record`) just before it exits,
and the launcher reads them back (`collect`) after torchrun has ended. The launcher's final reason goes
to the termination-log file (`write_termination_log`), which `kubectl describe pod` shows.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainer import exitcodes

OUTCOME_DIR_ENV = "HIGGS_TRAINER_OUTCOME_DIR"
TERMINATION_LOG_ENV = "TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# The kubelet reads at most 4096 bytes of a termination message; a reason is cut well before that.
MAX_REASON_CHARS = 2000


@dataclass(frozen=True)
class Outcome:
    """How one process ended: its global rank, exit code and one-line reason ("" on success)."""

    rank: int
    code: int
    reason: str


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """`text` on one line (whitespace runs collapsed), cut to `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def record(code: int, reason: str, environ: Mapping[str, str] | None = None) -> None:
    """Write this process's outcome where the launcher looks for it; a no-op outside a launch.

    Never raises: a full disk here must not hide the error being reported.
    """
    env = os.environ if environ is None else environ
    directory = env.get(OUTCOME_DIR_ENV)
    if not directory:
        return
    rank = int(env.get("RANK", "0") or 0)
    payload = json.dumps({"rank": rank, "code": int(code), "reason": one_line(reason)})
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".outcome-")
        with os.fdopen(fd, "w") as f:
            f.write(payload)
        os.replace(tmp, Path(directory) / f"rank-{rank}.json")
    except OSError:
        pass


def collect(directory: str | Path) -> list[Outcome]:
    """The outcomes written in `directory`, lowest rank first (unreadable files are skipped)."""
    found = []
    for path in Path(directory).glob("rank-*.json"):
        try:
            data = json.loads(path.read_text())
            found.append(Outcome(int(data["rank"]), int(data["code"]), str(data.get("reason", ""))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda o: o.rank)


def write_termination_log(reason: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Write `reason` as one line to the termination-log file; returns the path, or None if not writable.

    The path is `TERMINATION_LOG` (default /dev/termination-log, the file Kubernetes mounts). Outside
    Kubernetes that path usually does not exist and its directory is not writable: nothing is written.
    """
    env = os.environ if environ is None else environ
    path = Path(env.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG)
    writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)
    if not writable:
        return None
    try:
        path.write_text(one_line(reason) + "\n")
    except OSError:
        return None
    return path


class Stopped(BaseException):
    """The run stops on purpose with a known exit code and reason (a signal; see `trainer.signals`).

    A `BaseException`, like `KeyboardInterrupt`, so that no `except Exception` on the way up swallows it;
    `higgs-audio-trainer`'s dispatcher turns it into its exit code.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


PEER_LOST_MESSAGES = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                      "collective operation timeout", "NCCL communicator was aborted")


def lost_peer(err: BaseException) -> bool:
    """Whether `err` says another rank or the rendezvous went away (torch.distributed's own errors, or
    the messages gloo and NCCL raise as plain RuntimeErrors), rather than a fault of this process."""
    dist = sys.modules.get("torch.distributed")  # loaded only if the run got that far
    dist_error = getattr(dist, "DistError", None) if dist is not None else None
    if dist_error is not None and isinstance(err, dist_error):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in PEER_LOST_MESSAGES)


def classify(err: BaseException) -> tuple[int, str]:
    """The exit code and one-line reason of a process that `err` ends.

    One table for the CLI (which exits with the code) and the run's metrics (which push it as the final
    status before the exception has left the run): configuration 2, data 3, a deliberate stop its own
    code, a lost peer 160, anything else 1.
    """
    from trainer.config import ConfigError
    from trainer.data import DataError

    if isinstance(err, Stopped):
        return err.code, err.reason
    if isinstance(err, ConfigError):
        return exitcodes.CONFIG_ERROR, f"configuration error: {err}"
    if isinstance(err, DataError):
        return exitcodes.DATA_ERROR, f"data error: {err}"
    if isinstance(err, KeyboardInterrupt):
        return exitcodes.INTERRUPTED, "interrupted"
    if lost_peer(err):  # a peer died or the rendezvous failed: a restart can succeed
        return exitcodes.PROCESS_LOST, f"lost a peer: {type(err).__name__}: {err}"
    return exitcodes.FAILURE, f"unexpected error: {type(err).__name__}: {err}"
