"""Exit codes of `higgs-audio-trainer`, one table for the CLI, the launcher and the chart.

Configuration and data errors are below 128: retrying cannot fix them, so a PyTorchJob with
`restartPolicy: ExitCode` does not restart on them. Codes of 128 and above are retried: a restart can
succeed, and it resumes from the newest complete checkpoint. `higgs-audio-trainer launch` (the image's
entrypoint) decides the code of a whole launch from the codes its ranks report (`trainer.outcome`).
"""

OK = 0
FAILURE = 1  # an unexpected error (a Python traceback says where)
CONFIG_ERROR = 2  # a flag, environment variable, YAML key or path is wrong; the message names it
DATA_ERROR = 3  # the dataset has bad samples (all listed) or no usable samples
DIVERGED = 4  # the training loss became NaN or infinite (--nan_policy stop); nothing new was saved
DISK_FULL = 5  # a checkpoint did not fit on its filesystem; the message names the path and the space needed

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
    INTERRUPTED: "stopped by SIGINT; a checkpoint was saved if training had started (retried)",
    PREEMPTED: "stopped by SIGTERM (preemption, eviction, `docker stop`); a checkpoint was saved if training "
    "had started (retried)",
    PROCESS_LOST: "a process ended without a reason: killed (for example out of memory), or a peer or the "
    "rendezvous was lost (retried)",
}


def for_signal(signum: int) -> int:
    """The exit code of a run stopped by signal `signum` (143 for SIGTERM)."""
    return SIGNAL_BASE + int(signum)
