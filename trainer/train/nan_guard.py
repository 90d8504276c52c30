"""What a NaN or infinite training loss does (`--nan_policy`): stop with a clear error, or skip the step.

`NanGuard` decides once per optimizer step, and every rank takes the same branch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer import dist as ranks
from trainer import errors
from trainer.errors import Stopped
from trainer.train import checkpoint as ckpt

log = logging.getLogger(__name__)


class NanGuard(TrainerCallback):
    """Stop or skip the optimizer step when any rank's loss in it is NaN or infinite.

    `HiggsAudioTrainer.compute_loss` hands every training micro-batch's loss to `NanGuard.observe`, which keeps a
    flag on the loss's device (no host sync per micro-batch). Right before the optimizer step the ranks agree
    whether any of them saw a non-finite loss in this step (`StepAgreement`, the same collective as the stop
    signal's), so that all of them take the same branch and none is left waiting in a collective:

    - `stop` (the default): raise `errors.Stopped` with exit code 4 (`errors.DIVERGED`, not retried: a
      restart would diverge again) before the optimizer touches the weights. Nothing new is saved, so the
      newest complete checkpoint stays the resume point.
    - `skip`: drop the step's gradients (set to None, so that AdamW leaves the weights and its moments alone;
      zero gradients would still move the weights through momentum and weight decay), count the step and go
      on. The count since the process started is the `nan_steps_skipped` log key. The learning-rate schedule
      still advances, as it does for a step that AMP's gradient scaler skips.
    """

    def __init__(self, policy: Literal["stop", "skip"] = "stop", before_stop: Callable[[], None] | None = None) -> None:
        self.policy = policy
        self.before_stop = before_stop  # runs before the stop names the resume point (a save may be finishing)
        self.skipped = 0
        self._losses: list[torch.Tensor] = []
        self.agreed: int | None = None  # this step's agreement of every rank (`StepAgreement`)

    def observe(self, loss: torch.Tensor) -> None:
        """Note one training micro-batch's loss (kept on its device until the optimizer step)."""
        self._losses.append(loss.detach())

    def step_flag(self) -> Any:
        """1 (as a tensor on the loss's device: no host sync here) when a loss of this step was not finite."""
        if not self._losses:
            return 0
        return torch.stack([~torch.isfinite(v.float()).all() for v in self._losses]).any()

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Act on a non-finite loss of any rank before the update: stop with a message, or skip the step."""
        agreed = self.agreed if self.agreed is not None else ranks.max_over_ranks([self.step_flag()])[0]
        losses, self._losses, self.agreed = self._losses, [], None
        if not agreed:
            return
        step = state.global_step + 1
        bad = [float(v) for v in losses if not math.isfinite(float(v))]
        what = f"the loss was {bad[0]}" if bad else "the loss was not finite on another rank"
        if self.policy == "stop":
            if self.before_stop is not None:
                self.before_stop()
            newest, _ = ckpt.newest_complete(args.output_dir)
            kept = f"{newest.name} stays the resume point" if newest else "no checkpoint had been written"
            raise Stopped(
                errors.DIVERGED,
                f"training diverged: {what} at step {step} (--nan_policy stop); nothing was saved for it and "
                f"{kept}. Lower the learning rate, or set --nan_policy skip to skip such steps",
            )
        optimizer = kwargs["optimizer"]
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        self.skipped += 1
        log.warning("step %d skipped: %s (--nan_policy skip; %d skipped so far)", step, what, self.skipped)
