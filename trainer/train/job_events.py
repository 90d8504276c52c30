"""The checkpoint Events of rank 0: the one part of the job's story only a training process knows.

The launcher records the start, resume and ending of each attempt (`trainer.launch.attempt`); a saved
checkpoint is seen here, in the `checkpoint_*` values `CheckpointWriter` logs once a checkpoint is
complete, with the step count and the last training loss beside it (at most one Event a minute).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer.cluster.events import EventRecorder, recorder_from_options
from trainer.config.options import Config

log = logging.getLogger(__name__)


class CheckpointEvents(TrainerCallback):
    """Records a CheckpointSaved Event for each complete checkpoint (rate-limited by the recorder)."""

    def __init__(self, recorder: EventRecorder) -> None:
        self.recorder = recorder
        self.loss: float | None = None

    @classmethod
    def from_config(cls, cfg: Config, environ: Mapping[str, str] | None = None) -> CheckpointEvents | None:
        """For global rank 0 with Events on and a job to record them on; None otherwise."""
        env = os.environ if environ is None else environ
        if int(env.get("RANK", "0") or 0) != 0:
            return None
        recorder = recorder_from_options(cfg.cluster, env)
        return cls(recorder) if recorder is not None else None

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        """Record a checkpoint Event when one was logged, with the latest training loss."""
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if "checkpoint_step" in logs:
            size = logs.get("checkpoint_bytes")
            self.recorder.checkpoint_saved(int(logs["checkpoint_step"]), state.max_steps,
                                           int(size) if size else None, self.loss)

    def close(self) -> None:
        """Wait a bounded time for the queued Events; warn if some could not be recorded."""
        sent, failed = self.recorder.close()
        if failed:
            log.warning("events: %d of %d checkpoint Events could not be recorded on %s", failed, sent + failed,
                        self.recorder.target)
