"""Every exception the trainer raises on purpose, the exit-code table, and which code an exception ends with.

The foundation of the package: it imports nothing of ours, so any layer can raise these and the CLI, the
launcher, the metrics and the chart read one table. Codes below 128 are not retried (a restart cannot fix
them); 128 and above are, and a restart resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import os
import sys

OK = 0
FAILURE = 1  # an unexpected error (a Python traceback says where)
CONFIG_ERROR = 2  # a flag, environment variable, YAML key or path is wrong; the message names it
DATA_ERROR = 3  # the dataset has bad samples (all listed) or no usable samples
DIVERGED = 4  # the training loss became NaN or infinite (--nan_policy stop); nothing new was saved
DISK_FULL = 5  # a checkpoint did not fit on its filesystem; the message names the path and the space needed
RETRIES_SPENT = 6  # the retry budget: the last attempts all failed (retryably) without a new checkpoint

# Retried. 128 + N means "stopped by signal N", as in a shell; custom codes start at 160, above them all.
SIGNAL_BASE = 128
INTERRUPTED = SIGNAL_BASE + 2  # SIGINT (Ctrl-C)
PREEMPTED = SIGNAL_BASE + 15  # SIGTERM: pod deleted, evicted or preempted, `docker stop`
PROCESS_LOST = 160  # a rank or torchrun ended without saying why: killed (out of memory), peer or rendezvous lost

TABLE = {
    OK: "success",
    FAILURE: "unexpected error",
    CONFIG_ERROR: "configuration error (flag, env var, YAML key or path)",
    DATA_ERROR: "data error (bad samples are listed)",
    DIVERGED: "training diverged: the loss became NaN or infinite (`--nan_policy stop`); nothing was saved "
    "for that step, the newest complete checkpoint stays the resume point",
    DISK_FULL: "out of disk space while saving a checkpoint (the message names the path and the space needed); "
    "the partial checkpoint is removed, earlier ones are intact",
    RETRIES_SPENT: "retry budget spent: the last attempts (`--retry_budget`) each ended with a retried code and "
    "saved no new complete checkpoint; the launcher stops here so that the operator stops restarting",
    INTERRUPTED: "stopped by SIGINT; a checkpoint was saved if training had started (retried)",
    PREEMPTED: "stopped by SIGTERM (preemption, eviction, `docker stop`); a checkpoint was saved if training "
    "had started (retried)",
    PROCESS_LOST: "a process ended without a reason: killed (for example out of memory), or a peer or the "
    "rendezvous was lost (retried)",
}


def for_signal(signum: int) -> int:
    """The exit code of a run stopped by signal `signum` (143 for SIGTERM)."""
    return SIGNAL_BASE + int(signum)


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the flag or variable."""


class DataError(Exception):
    """The input as a whole is unusable: missing path, unknown format, or a file of the wrong shape."""


class BadSamplesError(DataError):
    """The dataset has bad samples and `--skip_bad_samples` is off; the message lists all of them."""


class AudioError(Exception):
    """An audio file is missing, unreadable, empty or holds non-finite samples.

    Args:
        path (`str | os.PathLike[str]`):
            The file, as it was given.
        reason (`str`):
            What is wrong with it, for example "file not found".
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str]]:
        # Data-loader workers pickle exceptions back to the main process; the default reduce would call
        # __init__ with the single formatted message and fail.
        return (AudioError, (self.path, self.reason))


class Stopped(BaseException):
    """The run stops on purpose with a known exit code and reason (a signal, a NaN loss, a full disk).

    A `BaseException`, like `KeyboardInterrupt`, so that no `except Exception` on the way up swallows it;
    `higgs-audio-trainer`'s dispatcher turns it into its exit code.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# gloo raises a collective that outlasts the process group's timeout (--ddp_timeout) as a plain RuntimeError:
# "Timed out waiting 60000ms for recv operation to complete", or "Application timeout caused pair closure"
# (the gradient all-reduce); the rank it waited for is lost.
PEER_LOST_MESSAGES = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                      "collective operation timeout", "NCCL communicator was aborted", "Timed out waiting",
                      "Application timeout caused pair closure")


def lost_peer(err: BaseException) -> bool:
    """Whether `err` says another rank or the rendezvous went away, rather than a fault of this process.

    Such errors are torch.distributed's own, or the messages gloo and NCCL raise as plain RuntimeErrors.
    """
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
    if isinstance(err, Stopped):
        return err.code, err.reason
    if isinstance(err, ConfigError):
        return CONFIG_ERROR, f"configuration error: {err}"
    if isinstance(err, DataError):
        return DATA_ERROR, f"data error: {err}"
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED, "interrupted"
    if lost_peer(err):  # a peer died or the rendezvous failed: a restart can succeed
        return PROCESS_LOST, f"lost a peer: {type(err).__name__}: {err}"
    return FAILURE, f"unexpected error: {type(err).__name__}: {err}"
