"""`StopOnSignal`: what a SIGTERM does before, during and after training, during evaluation and data
preparation, in one process (the DDP path, where the ranks agree through an all_reduce, runs in
tests/trainer/launch/test_launcher.py, tests/e2e/ and tests/image/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tests.processes import trainer_process
from trainer.errors import Stopped
from trainer.rank_reports import OUTCOME_DIR_ENV
from trainer.train.checkpoint import MARKER
from trainer.train.signals import StopOnSignal


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


def test_save_on_signal_false_stops_at_the_step_end_without_saving(args: TrainingArguments) -> None:
    with StopOnSignal(save=False) as stop:
        stop.on_train_begin(args, TrainerState(), TrainerControl())
        os.kill(os.getpid(), signal.SIGTERM)
        control = step_end(stop, args, 4)
        assert control.should_training_stop and not control.should_save
        with pytest.raises(Stopped) as stopped:
            stop.raise_if_stopped()
    assert stopped.value.code == 143
    assert stopped.value.reason.startswith("stopped by SIGTERM at step 4 without saving (--save_on_signal false)")


HANGING_SAVE = textwrap.dedent("""
    import os, signal, time
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from trainer.train.signals import StopOnSignal
    args = TrainingArguments(output_dir=os.environ["OUT"], use_cpu=True, report_to=[])
    with StopOnSignal(timeout_seconds=1.0) as stop:
        stop.on_train_begin(args, TrainerState(), TrainerControl())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # a step or a save that never ends
""")


def test_signal_save_timeout_exits_with_the_signal_code_and_records_why(tmp_path) -> None:
    env = {**os.environ, OUTCOME_DIR_ENV: str(tmp_path), "RANK": "0", "OUT": str(tmp_path / "out")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", HANGING_SAVE], env=env, capture_output=True, text=True,
                          timeout=120)
    waited = time.monotonic() - started
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "within 1 s (--signal_save_timeout_seconds)" in proc.stderr
    assert waited < 30  # well before the 60 s "save" would have ended
    recorded = json.loads((tmp_path / "rank-0.json").read_text())
    assert recorded["code"] == 143
    assert recorded["reason"].startswith("stopped by SIGTERM: the step and checkpoint did not finish within 1 s")


class _SigtermDuringEvaluation(TrainerCallback):
    """Sends this process SIGTERM from inside the evaluation loop at step `step`."""

    def __init__(self, step: int) -> None:
        self.step, self.sent = step, False

    def on_prediction_step(self, args, state, control, **kw):
        if state.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def _train_until_stopped(values: dict[str, str], probe: TrainerCallback, *, save: bool = True) -> tuple[Any, Stopped]:
    """Train in this process under `StopOnSignal(save=save)` with `probe` sending the signal; returns the
    trainer and the `Stopped` the run ends with."""
    from trainer.commands.train import build
    from trainer.config.cli import parse_train_args

    cfg = parse_train_args([], {k.upper(): v for k, v in values.items()})
    with StopOnSignal(save=save) as stop:
        trainer, _, resume = build(cfg)
        trainer.add_callback(stop)
        trainer.add_callback(probe)
        trainer.train(resume_from_checkpoint=resume)
        with pytest.raises(Stopped) as stopped:
            stop.raise_if_stopped()
    return trainer, stopped.value


def test_sigterm_during_evaluation_saves_at_that_step_right_after_it(base_args) -> None:
    values = base_args | {"disable_eval": "false", "validation_split": "0.2", "eval_steps": "4",
                          "save_steps": "100", "logging_steps": "1"}
    out = Path(base_args["output_dir"])
    probe = _SigtermDuringEvaluation(step=4)
    trainer, stopped = _train_until_stopped(values, probe)
    assert probe.sent
    assert stopped.code == 143
    assert stopped.reason == "stopped by SIGTERM at step 4: checkpoint-4 saved; a restart resumes from it"
    # The evaluation finished, the checkpoint is the step just evaluated, and no further step was taken:
    # nothing is lost.
    assert any("eval_loss" in h and h["step"] == 4 for h in trainer.state.log_history)
    assert trainer.state.global_step == 4
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    assert (out / "checkpoint-4" / MARKER).is_file()


class _SigtermDuringStep(TrainerCallback):
    """Sends this process SIGTERM while the step that ends at global step `step` runs."""

    def __init__(self, step: int) -> None:
        self.step, self.sent = step, False

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.step - 1 and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_save_on_signal_false_still_writes_the_checkpoint_due_at_that_step(base_args) -> None:
    values = base_args | {"save_on_signal": "false", "save_steps": "4", "max_steps": "100", "logging_steps": "1"}
    out = Path(base_args["output_dir"])
    probe = _SigtermDuringStep(step=4)
    trainer, stopped = _train_until_stopped(values, probe, save=False)
    assert probe.sent and trainer.state.global_step == 4
    assert stopped.code == 143
    assert stopped.reason == ("stopped by SIGTERM at step 4: checkpoint-4 saved, as it was due there "
                                    "(--save_on_signal false saves no other); a restart resumes from it")
    # The signal cancels no regular save: save_steps=4 makes checkpoint-4 due, and it is complete.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    assert (out / "checkpoint-4" / MARKER).is_file()


@pytest.mark.slow
def test_sigterm_during_data_preparation_exits_143_at_once_with_nothing_to_save(base_args, tmp_path) -> None:
    from tests.conftest import clean_env

    values = base_args | {"cache_dir": str(tmp_path / "fresh_cache")}  # every clip must be encoded
    env = clean_env(**{k.upper(): v for k, v in values.items()}, OMP_NUM_THREADS="1")
    env[OUTCOME_DIR_ENV] = str(tmp_path)
    log = tmp_path / "train.log"
    with trainer_process("train", env, log) as run:
        run.wait_for_log("encoding audio", timeout=240, interval=0.05)
        run.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = run.proc.wait(timeout=120)
    text = log.read_text()
    assert code == 143, text[-3000:]
    assert time.monotonic() - signalled < 30
    assert "stopped by SIGTERM before training started; nothing to save" in text
    assert json.loads((tmp_path / "rank-0.json").read_text())["code"] == 143
    out = Path(base_args["output_dir"])
    assert not list(out.glob("checkpoint-*")) and not (out / "lora_adapters").exists()
