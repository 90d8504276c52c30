"""`StepAgreement`: every rank's per-step flags (a NaN loss, a stop signal) agreed in one collective per step.

Every rank must take the same branch at a step (stop, skip, save), or one is left waiting in a collective.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer import dist as ranks


@runtime_checkable
class Voter(Protocol):
    """A callback with a per-step flag, agreed on by all ranks once per step.

    `step_flag()` is this rank's value (0: nothing to report; an int or a 0-d tensor on any device), and `agreed`
    receives the largest value of any rank, once per step.
    """

    agreed: int | None

    def step_flag(self) -> Any:
        """This rank's flag for this step: 0 when it has nothing to report."""


class StepAgreement(TrainerCallback):
    """One collective per step for every per-step flag of the trainer's callbacks.

    Right before each optimizer step, reduce the flag of every `Voter` among the trainer's callbacks in one
    collective (`dist.max_over_ranks`) and hand each its agreed value; the voters act on it in their own
    events (`NanGuard` before the optimizer, `StopOnSignal` at the step end). A voter that finds no agreed
    value (it runs under a trainer without this callback) asks `dist` itself.
    """

    def __init__(self, callbacks: Callable[[], Iterable[Any]]) -> None:
        self.callbacks = callbacks

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Reduce every voter's flag in one collective and hand each voter its agreed value."""
        voters = [cb for cb in self.callbacks() if isinstance(cb, Voter)]
        for voter, value in zip(voters, ranks.max_over_ranks([v.step_flag() for v in voters]), strict=True):
            voter.agreed = value
