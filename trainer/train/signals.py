"""Stop on SIGTERM or SIGINT with a complete checkpoint, so that a restarted pod loses almost nothing.

Kubernetes sends SIGTERM when it deletes, evicts or preempts a pod, and SIGKILL when the grace period
is over; `docker stop` does the same. `StopOnSignal` turns the signal into a checkpoint at the next
step end and a stop, on every rank at the same step.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any, Literal

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer import dist as ranks
from trainer import errors
from trainer.dist import tell_peers
from trainer.errors import Stopped
from trainer.rank_reports import record
from trainer.train.signal_wakeup import SignalWakeup

log = logging.getLogger(__name__)

HANDLED = (signal.SIGTERM, signal.SIGINT)
class StopOnSignal(TrainerCallback):
    """Save a checkpoint and stop at the next step end after SIGTERM/SIGINT on any rank.

    The launcher passes the signal on to every rank. A checkpoint cannot be written from inside a signal
    handler (a rank may be in the middle of a collective), so the handler only notes the signal and this
    `TrainerCallback` acts on it at the next optimizer step end (or right after an evaluation the signal
    interrupted): the ranks agree in the step's one collective (`StepAgreement`: they all stop at the same
    step and none is left waiting in a collective), the Trainer saves a checkpoint there and stops, and
    `commands.train.main` raises
    `errors.Stopped` (exit code 128 + the signal number: retried) instead of writing the final adapter.

    `--save_on_signal false` (`save`) makes the ranks stop at the agreed step end without saving a checkpoint
    for the signal (one that is due at that step anyway, at `--save_steps` or the last step, is still written;
    a restart resumes from the newest complete checkpoint). `--signal_save_timeout_seconds` (`timeout_seconds`)
    bounds the time from the signal to the end: a watchdog started by the handler records the reason and exits
    with 128 + the signal number once it has passed, so the process ends with a known code and reason before
    Kubernetes' SIGKILL at the end of `terminationGracePeriodSeconds` (the chart derives the bound from it). A
    checkpoint cut short there has no completeness marker and is ignored on restart.

    Use as a context manager around the run: it installs the signal handlers on entry and puts the
    previous ones back on exit (tests run many trainings in one process). Pass it to the Trainer with
    `trainer.add_callback`, and call `raise_if_stopped()` after `trainer.train()` returns.
    """

    def __init__(self, save: bool = True, timeout_seconds: float = 0.0) -> None:
        self.save = save
        self.timeout_seconds = timeout_seconds
        self.received: int | None = None
        self.phase: Literal["before", "training", "after", "stopping"] = "before"
        self.stopped_at: int | None = None
        self.due_save = False  # --save_on_signal false, and a regular checkpoint was due at the stop step anyway
        self._previous: dict[int, Any] = {}
        self._watchdog: threading.Timer | None = None
        self.agreed: int | None = None  # this step's agreement of every rank (`StepAgreement`)
        self._watchdog_lock = threading.RLock()  # the handler may run while the main thread holds it
        # The watchdog is also armed from a thread that sees the signal at once, even while the main thread,
        # whose handler would arm it, waits in a collective (trainer.train.signal_wakeup).
        self._wakeup = SignalWakeup(HANDLED, self._arm_from_wakeup)

    # ---- handlers --------------------------------------------------------------------------------
    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
            self._wakeup.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Stopped):
            self._stopping(exc)
        # Handlers first, then the wakeup thread: after those nothing can arm a watchdog that outlives the run.
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self._wakeup.stop()
        with self._watchdog_lock:
            if self._watchdog is not None:
                self._watchdog.cancel()

    def _stopping(self, stopped: Stopped) -> None:
        """On the way out with `stopped`.

        Tell the other ranks if this one was signalled before training, and record the outcome now, while this handler
        still stands (a SIGTERM from torchrun, sent once a peer has exited, would end the process before the dispatcher
        records it once the default one is back).
        """
        signalled_before = self.received if self.phase == "before" else None
        self.phase = "stopping"  # a further signal is only noted: nothing may cut this short
        if signalled_before is not None:
            tell_peers(signalled_before)
        record(stopped.code, stopped.reason)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: note the signal, and say what will happen (no checkpoint can be written here).

        Before training starts there is nothing to save, so the handler stops the process at once, and tells the
        other ranks through the process group's store: during data preparation they poll it
        (`raise_if_peer_stopped`, in the encoding loop and in `dist.barrier`), so that a rank on another node does
        not go on encoding the audio, or wait for a rank that is gone, until the process-group timeout. Once
        training has ended the signal is only logged, so that the final adapter is still written.
        """
        name = signal.Signals(signum).name
        if self.phase == "before":
            self.received = signum
            raise Stopped(errors.for_signal(signum), f"stopped by {name} before training started; nothing to save")
        if self.phase == "stopping":
            return
        if self.received is None:
            self.received = signum
            what = "training is over; finishing the final save"
            if self.phase == "training":
                what = "saving a checkpoint and stopping at the next step end" if self.save else (
                    "stopping at the next step end without saving (--save_on_signal false)")
            if self.timeout_seconds > 0:
                what += f", within {self.timeout_seconds:g} s (--signal_save_timeout_seconds)"
                self._arm_watchdog(signum)
            # os.write, not logging: a handler may interrupt a logging call holding its lock.
            os.write(2, f"higgs-audio-trainer: got {name}: {what}\n".encode())

    def _arm_watchdog(self, signum: int) -> None:
        """Start the watchdog for `signum` unless one runs already (from the handler or the wakeup thread)."""
        with self._watchdog_lock:
            if self._watchdog is not None or self.timeout_seconds <= 0:
                return
            self._watchdog = threading.Timer(self.timeout_seconds, self._expire, args=(signum,))
            self._watchdog.daemon = True
            self._watchdog.start()

    def _arm_from_wakeup(self, signum: int) -> None:
        """The wakeup thread saw `signum`.

        Bound the time to the end as the handler would, in case the main thread cannot run the handler now (a
        collective). Before training the handler itself stops the run.
        """
        if self.phase in ("training", "after"):
            self._arm_watchdog(signum)

    def _expire(self, signum: int) -> None:
        """The watchdog: the save after a signal took longer than the bound; exit now with its code."""
        signum = self.received or signum
        code = errors.for_signal(signum)
        reason = (
            f"stopped by {signal.Signals(signum).name}: the step and checkpoint did not finish within "
            f"{self.timeout_seconds:g} s (--signal_save_timeout_seconds); a restart resumes from the newest "
            "complete checkpoint"
        )
        os.write(2, f"higgs-audio-trainer: {reason}\n".encode())
        record(code, reason)
        os._exit(code)

    # ---- training events -------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """From here a signal stops training at a step end instead of ending the process at once."""
        self.phase = "training"

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Once any rank got a signal, ask for a save (with `--save_on_signal`) and the end of training."""
        if self.stopped_at is None and self._agreed(args):
            # Only ever ask for a save: --save_on_signal false must not cancel a checkpoint that is due at
            # this step (save_steps, the last step), which DefaultFlowCallback has asked for before us.
            self.due_save = control.should_save and not self.save
            control.should_save = control.should_save or self.save
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Act on a signal that came during evaluation at the step just taken, not one step later."""
        # Evaluation runs after a step end on every rank: a signal that came during it is acted on right
        # after it, at the step just taken (the Trainer saves after evaluating), not one step later.
        return self.on_step_end(args, state, control, **kwargs)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """After training a signal is only logged, so that the final adapter is still written."""
        self.phase = "after"

    # ---- decisions -------------------------------------------------------------------------------
    def step_flag(self) -> int:
        """This rank's signal number, 0 without one (`StepAgreement` reduces it with the step's other flags)."""
        return self.received or 0

    def _agreed(self, args: TrainingArguments) -> bool:
        """Whether any rank got a signal.

        This step's agreement, or (without one: a signal during evaluation, a trainer without `StepAgreement`)
        one collective of its own.
        """
        agreed = self.agreed if self.agreed is not None else ranks.max_over_ranks([self.step_flag()])[0]
        self.agreed = None
        if agreed and self.received is None:
            self.received = agreed  # a peer was signalled: stop with its signal's code
        return agreed != 0

    def raise_if_stopped(self) -> None:
        """After `trainer.train()`: raise `Stopped` if training ended because of a signal."""
        if self.stopped_at is None or self.received is None:
            return
        name = signal.Signals(self.received).name
        step = self.stopped_at
        if self.due_save:
            raise Stopped(
                errors.for_signal(self.received),
                f"stopped by {name} at step {step}: checkpoint-{step} saved, as it was due there "
                "(--save_on_signal false saves no other); a restart resumes from it",
            )
        if not self.save:
            raise Stopped(
                errors.for_signal(self.received),
                f"stopped by {name} at step {step} without saving (--save_on_signal false); a restart resumes "
                "from the newest complete checkpoint",
            )
        raise Stopped(
            errors.for_signal(self.received),
            f"stopped by {name} at step {step}: checkpoint-{step} saved; a restart resumes from it",
        )
