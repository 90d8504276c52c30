"""`StopOnSignal`: what a SIGTERM does before, during and after training, in one process (the DDP path,
where the ranks agree through an all_reduce, runs in tests/trainer/test_launch.py and tests/image/)."""

from __future__ import annotations

import os
import signal

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from trainer.outcome import Stopped
from trainer.signals import StopOnSignal


@pytest.fixture
def args(tmp_path) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])


def step_end(stop: StopOnSignal, args: TrainingArguments, step: int) -> TrainerControl:
    state = TrainerState()
    state.global_step = step
    return stop.on_step_end(args, state, TrainerControl())


def test_before_training_a_signal_stops_at_once_with_128_plus_its_number() -> None:
    with StopOnSignal(), pytest.raises(Stopped) as stopped:
        os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.value.code == 143
    assert "before training started" in stopped.value.reason


def test_during_training_the_next_step_end_saves_and_stops(args: TrainingArguments) -> None:
    with StopOnSignal() as stop:
        stop.on_train_begin(args, TrainerState(), TrainerControl())
        control = step_end(stop, args, 6)
        assert not control.should_save and not control.should_training_stop
        stop.raise_if_stopped()  # nothing received: no-op
        os.kill(os.getpid(), signal.SIGINT)
        control = step_end(stop, args, 7)
        assert control.should_save and control.should_training_stop
        stop.on_train_end(args, TrainerState(), TrainerControl())
        with pytest.raises(Stopped) as stopped:
            stop.raise_if_stopped()
    assert stopped.value.code == 130
    assert stopped.value.reason == "stopped by SIGINT at step 7: checkpoint-7 saved; a restart resumes from it"


def test_after_training_a_signal_lets_the_final_save_finish(args: TrainingArguments) -> None:
    with StopOnSignal() as stop:
        stop.on_train_begin(args, TrainerState(), TrainerControl())
        stop.on_train_end(args, TrainerState(), TrainerControl())
        os.kill(os.getpid(), signal.SIGTERM)
        stop.raise_if_stopped()
    assert stop.received == signal.SIGTERM


def test_previous_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopOnSignal():
        assert signal.getsignal(signal.SIGTERM) != before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
