"""`StepAgreement`: the NaN guard's and the stop signal's per-step flags travel in one collective per step."""

from __future__ import annotations

from typing import Any

from trainer import dist
from trainer.commands.train import build
from trainer.config.cli import parse_train_args
from trainer.train.signals import StopOnSignal


def test_one_agreement_per_optimizer_step_carries_the_nan_and_the_signal_flags(base_args, monkeypatch) -> None:
    calls: list[int] = []
    real = dist.max_over_ranks

    def counted(flags: Any) -> list[int]:
        calls.append(len(flags))
        return real(flags)

    monkeypatch.setattr(dist, "max_over_ranks", counted)
    cfg = parse_train_args([], {k.upper(): v for k, v in (base_args | {"max_steps": "4", "save_steps": "1000",
                                                                       "gradient_accumulation_steps": "2"}).items()})
    with StopOnSignal() as stop:
        trainer, _, _ = build(cfg)
        trainer.add_callback(stop)
        trainer.train()
        stop.raise_if_stopped()

    assert calls == [2, 2, 2, 2]  # one call per optimizer step (not per micro-batch), both flags in it
