"""`ProgressReport`: where a run is, how fast it goes and when it ends, on rank 0.

On a terminal it is a progress bar (step counter, steps per second, time left, the last logged loss); in a
log (stderr not a terminal: a container, `launch` into a file, CI) it is one plain line per logging step,

    step 120/2000, loss 3.2104, 1.92 steps/s, eta 0:16:18

through the `trainer.progress` logger, so it carries the log's timestamp and rank. It only reads what the
Trainer hands every callback (the state and the logged loss, already reduced over ranks): no collective, no
random number and no tensor, so a run is the same with it and without it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from trainer.encode.counter import format_eta

log = logging.getLogger("trainer.progress")


def progress_line(step: int, total: int, loss: float | None, rate: float | None) -> str:
    """`step 120/2000, loss 3.2104, 1.92 steps/s, eta 0:16:18`; a part not known yet is left out."""
    parts = [f"step {step}/{total}"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if rate:
        parts.append(f"{rate:.3g} steps/s")
        parts.append(f"eta {format_eta((total - step) / rate)}")
    return ", ".join(parts)


class ProgressReport(TrainerCallback):
    """The run's progress on rank 0: a bar on a terminal, plain lines in a log.

    `attach(trainer)` adds it. On a terminal it also takes the place of `PrinterCallback`, which prints the
    Trainer's log dictionaries past the bar and would break it: it writes the same text above the bar, and
    from the same place in the callback order, dropping `total_flos` as that one does, so the callbacks after
    it see the logs they saw before.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.on_terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.active = False
        self.bar: Any = None
        self.started = 0.0
        self.first_step = 0
        self.loss: float | None = None
        self.prints_logs = False

    @classmethod
    def attach(cls, trainer: Any, stream: IO[str] | None = None) -> ProgressReport:
        """Add the report to a trainer, in place of its log printer on a terminal so the bar stays intact."""
        report = cls(stream)
        callbacks = trainer.callback_handler.callbacks
        printer = [i for i, cb in enumerate(callbacks) if isinstance(cb, PrinterCallback)]
        if report.on_terminal and printer and trainer.is_world_process_zero():
            report.prints_logs = True
            callbacks[printer[0]] = report
        else:
            trainer.add_callback(report)
        return report

    def rate(self, step: int) -> float | None:
        """Steps per second of this run so far (a resumed run counts from its first step, not from 0)."""
        elapsed = time.monotonic() - self.started
        done = step - self.first_step
        return done / elapsed if done > 0 and elapsed > 0 else None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        """Start the bar on a terminal (rank 0 only); elsewhere the report logs lines."""
        self.active = state.is_world_process_zero
        if not self.active:
            return
        self.started, self.first_step = time.monotonic(), state.global_step
        if self.on_terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", file=self.stream,
                            dynamic_ncols=True, desc="training")

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        """Move the bar to the current step."""
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        """Show the logged figures: the loss on the bar, or a progress line with the rate and the time left."""
        if not self.active or not logs:
            return
        if self.prints_logs:
            logs.pop("total_flos", None)
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in logs.items()}
            (self.bar.write if self.bar is not None else print)(str(shown), file=self.stream)
        if "loss" not in logs or "eval_loss" in logs:
            return
        self.loss = float(logs["loss"])
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.loss:.4f}", refresh=True)
        else:
            log.info("%s", progress_line(state.global_step, state.max_steps, self.loss, self.rate(state.global_step)))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        """Close the bar, so what follows is not printed into it."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
