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
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
