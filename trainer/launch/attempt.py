"""One training launch as the cluster sees it: the retry ledger's entry and the job's Events around torchrun.

Kept by the launcher of node 0 only (or of a single node): it alone decides the job's fate in the ledger,
and one Event per ending is enough. Elastic jobs, where any node can host rank 0, keep neither.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from trainer import errors
from trainer.cluster.events import EventRecorder, recorder_from_options
from trainer.config.options import Config
from trainer.launch.ledger import Ledger, budget_reason
from trainer.launch.output_lock import OutputInUse, OutputLock
from trainer.train import checkpoint as ckpt


def newest_step(output_dir: str | None) -> tuple[int, Path | None]:
    """(step, path) of the newest complete checkpoint in `output_dir`; (0, None) without one."""
    if not output_dir:
        return 0, None
    path, _ = ckpt.newest_complete(output_dir)
    if path is None:
        return 0, None
    try:
        return ckpt.step_of(path), path
    except (OSError, ValueError, KeyError):
        return 0, None


def final_output(cfg: Config) -> str:
    """Where a successful run leaves its result: the adapter (LoRA) or the whole model."""
    name = ckpt.ADAPTER_DIR if cfg.lora.use_lora else ckpt.MODEL_DIR
    return str(Path(cfg.train.output_dir or ".") / name)


class TrainingAttempt:
    """The bookkeeping around one torchrun attempt: `begin` before torchrun starts, `end` after it.

    `begin` returns None, or the exit code and reason this attempt must not run with. The keeper holds the output
    directory's lock from `begin` to its exit.
    """

    def __init__(self, cfg: Config, environ: Mapping[str, str], *, keeper: bool) -> None:
        self.cfg, self.keeper = cfg, keeper
        self.ledger = Ledger(cfg.train.output_dir) if keeper and cfg.train.output_dir else None
        self.lock = OutputLock(cfg.train.output_dir) if self.ledger is not None else None
        self.events: EventRecorder | None = recorder_from_options(cfg.cluster, environ) if keeper else None

    def begin(self) -> tuple[int, str] | None:
        """Take the output lock, count the attempt and record its start; a reason not to run, or None."""
        if self.lock is not None:
            try:
                self.lock.acquire()
            except OutputInUse as err:  # the other run's ledger is not ours to write
                self.ledger = None
                return errors.CONFIG_ERROR, f"configuration error: OUTPUT_DIR {err}"
        step, path = newest_step(self.cfg.train.output_dir)
        if self.ledger is not None:
            spent = budget_reason(self.ledger.attempts(), self.cfg.cluster.retry_budget)
            self.ledger.begin(step)
            if spent:
                return errors.RETRIES_SPENT, f"{spent}; the attempts are listed in {self.ledger.path}"
        if self.events is not None:
            if path is not None and self.cfg.train.resume != "never":
                self.events.resumed(path.name, step, self._attempt_no())
            else:
                self.events.started(self._attempt_no())
        return None

    def _attempt_no(self) -> int | None:
        return self.ledger.current.attempt if self.ledger is not None and self.ledger.current else None

    def end(self, code: int, reason: str) -> None:
        """Record the attempt's end in the ledger and, as an Event, how it ended and where the run stands."""
        step, path = newest_step(self.cfg.train.output_dir)
        if self.ledger is not None:
            self.ledger.end(code, step)
        if self.events is None:
            return
        if code == errors.OK:
            self.events.succeeded(final_output(self.cfg), step)
        elif code in (errors.PREEMPTED, errors.INTERRUPTED):
            self.events.stopped(code, reason, path.name if path else None, step)
        else:
            self.events.failed(code, reason, step)
        sent, failed = self.events.close()
        if failed:
            print(f"higgs-audio-trainer launch: events: {failed} of {sent + failed} could not be recorded on "
                  f"{self.events.target}", file=sys.stderr, flush=True)
