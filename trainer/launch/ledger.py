"""The retry budget.

A ledger of launch attempts on the output volume, so that a job failing the same way every time stops instead of
restarting forever.

The training operator retries exit codes from 128 up under `restartPolicy: ExitCode` and does not apply
`backoffLimit` to them, so a run OOM-killed at the same step would be restarted without end. The launcher
of node 0 therefore appends one line per attempt to `OUTPUT_DIR/launch-attempts.jsonl` (attempt, start
time and step, end time, exit code, newest complete checkpoint at the end) and, before starting torchrun,
counts the attempts at the end of the ledger that *count against the budget*: ended with a retried code
and saved no new complete checkpoint. When `--retry_budget` of them follow each other, the attempt ends
at once with `errors.RETRIES_SPENT` (6), which the operator does not retry.

What counts:
- an attempt that saved a newer complete checkpoint than it started from made progress: the count restarts;
- a SIGTERM or SIGINT stop (130, 143: preemption, eviction, deletion, a node drain) is the cluster's doing,
  not the job's, even before the first checkpoint: it neither counts nor breaks the count;
- an attempt whose end was never written (the launcher itself was SIGKILLed, for example by the kernel's
  out-of-memory killer) counts as 137, and made progress if the next attempt starts from a newer checkpoint;
- a permanent ending (below 128, this budget's own 6 included) closes the count: a job recreated after a fix
  starts with a full budget.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from trainer import errors

log = logging.getLogger(__name__)

LEDGER_NAME = "launch-attempts.jsonl"
KILLED = errors.SIGNAL_BASE + 9  # the code of an attempt whose end was never written
# Stops the cluster asks for: not the job's fault, never counted.
EXTERNAL_STOPS = (errors.PREEMPTED, errors.INTERRUPTED)


@dataclass
class Attempt:
    """One launch attempt, one line of the ledger; `end_*` and `code` stay None until it ends."""

    attempt: int
    start_time: float
    start_step: int  # step of the newest complete checkpoint when it started (0: none)
    end_time: float | None = None
    code: int | None = None
    end_step: int | None = None  # newest complete checkpoint when it ended


def ledger_path(output_dir: str | os.PathLike[str]) -> Path:
    """Where the attempt ledger of an output directory lives."""
    return Path(output_dir) / LEDGER_NAME


class DamagedLedger(ValueError):
    """A ledger line that is not an attempt this launcher wrote; the message names the line and what is wrong."""


FIELD_TYPES = {"attempt": (int,), "start_time": (int, float), "start_step": (int,),
               "end_time": (int, float, type(None)), "code": (int, type(None)), "end_step": (int, type(None))}


def parse_line(line: str, number: int) -> Attempt:
    """One ledger line as an `Attempt`; raises `DamagedLedger` naming the line."""
    try:
        data = json.loads(line)
    except ValueError as err:
        raise DamagedLedger(f"line {number} is not JSON ({err.msg}): a torn or foreign line") from None
    if not isinstance(data, dict) or set(data) != set(FIELD_TYPES):
        raise DamagedLedger(f"line {number} does not hold the fields {', '.join(FIELD_TYPES)}")
    for key, types in FIELD_TYPES.items():
        if isinstance(data[key], bool) or not isinstance(data[key], types):
            raise DamagedLedger(f"line {number}: {key} is {data[key]!r}, expected "
                                f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}")
    return Attempt(**data)


def parse(raw: bytes) -> list[Attempt]:
    """The attempts of a ledger's bytes in order, a start line followed by its end line for the same attempt merged.

    Raises `DamagedLedger` for bytes that are not UTF-8, a torn line or a line of the wrong shape.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DamagedLedger(f"byte {err.start} is not UTF-8") from None
    if text and not text.endswith("\n"):
        raise DamagedLedger(f"line {text.count(chr(10)) + 1} is torn (no line end): a write cut short")
    attempts: dict[int, Attempt] = {}
    for number, line in enumerate(text.splitlines(), 1):
        found = parse_line(line, number)
        attempts[found.attempt] = found
    return [attempts[k] for k in sorted(attempts)]


def read(path: Path) -> list[Attempt]:
    """The ledger's attempts in order; a missing or unreadable ledger has none.

    A damaged one raises `DamagedLedger` (`Ledger.attempts` moves it aside).
    """
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    return parse(raw)


def counted_failures(attempts: list[Attempt]) -> int:
    """How many attempts at the end of `attempts` count against the budget (see the module docstring)."""
    count = 0
    for i, a in enumerate(attempts):
        code = KILLED if a.code is None else a.code
        if a.end_step is not None:
            end_step = a.end_step
        elif i + 1 < len(attempts):
            end_step = attempts[i + 1].start_step
        else:
            end_step = a.start_step
        if code in EXTERNAL_STOPS:
            continue
        if code < errors.SIGNAL_BASE or end_step > a.start_step:
            count = 0  # a permanent ending, success included, or progress
        else:
            count += 1
    return count


def budget_reason(attempts: list[Attempt], budget: int) -> str | None:
    """The termination message if the budget is spent, else None (`budget` 0: never spent)."""
    spent = counted_failures(attempts)
    if budget <= 0 or spent < budget:
        return None
    last = attempts[-spent:]
    codes = ", ".join(str(KILLED if a.code is None else a.code) for a in last)
    steps = sorted({a.start_step for a in last})
    where = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"
    return (f"retry budget spent: the last {spent} attempts (of --retry_budget {budget}) ended with retried "
            f"exit codes ({codes}) and none saved a new checkpoint (all started from {where}); stopping so "
            f"that the operator does not restart the job forever. Fix the cause (see those attempts' "
            f"termination messages), then recreate the job")


class Ledger:
    """The ledger of one output directory.

    Best effort: a volume that cannot be written costs a warning and the budget, never the run.
    """

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.path = ledger_path(output_dir)
        self.current: Attempt | None = None

    def attempts(self) -> list[Attempt]:
        """The attempts so far.

        A damaged ledger (a crash mid-write, a foreign editor, a disk fault) is moved aside with a warning and a fresh
        one is started: the budget restarts full, where crashing here would end every attempt with exit code 1, which
        the operator never retries.
        """
        try:
            return read(self.path)
        except DamagedLedger as err:
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
            try:
                self.path.replace(aside)
                where = f"moved to {aside}"
            except OSError as move_err:
                where = f"could not be moved aside ({move_err}); it is ignored"
            log.warning("launch: the attempt ledger %s is damaged (%s); it was %s and a fresh ledger starts, "
                        "so the retry budget starts full", self.path, err, where)
            return []

    def begin(self, start_step: int, now: float | None = None) -> Attempt:
        """Append the start of the next attempt; its number follows the ledger's last one."""
        previous = self.attempts()
        number = previous[-1].attempt + 1 if previous else 1
        self.current = Attempt(number, time.time() if now is None else now, start_step)
        self._append(self.current)
        return self.current

    def end(self, code: int, end_step: int, now: float | None = None) -> None:
        """Append how the current attempt ended (exit code and step), if one was begun."""
        if self.current is None:
            return
        self.current.end_time = time.time() if now is None else now
        self.current.code, self.current.end_step = int(code), end_step
        self._append(self.current)

    def _append(self, attempt: Attempt) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(asdict(attempt)) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            log.warning("launch: cannot write the attempt ledger %s (%s); the retry budget is not kept",
                        self.path, err)
