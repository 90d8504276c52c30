"""Samples while training leave the run bit-identical: the same training log entries (every logged step present)
and the same adapter bytes as a run without samples, with `lora_dropout` 0.05 drawing from the generator a
sample would move; and a run resumed from a checkpoint taken with samples at checkpoints reproduces the
uninterrupted run's losses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from tests.conftest import clean_env, to_argv
from tests.trainer.generate.test_sampler import _prompts
from trainer.commands.train import main as train_main
from trainer.config.cli import parse_train_args
from trainer.generate.isolation import forked_random_state, isolated, log_keeping_control

# Wall-clock figures differ between any two runs; everything else in a training entry must match.
TIMINGS = {"step_seconds", "data_wait_seconds", "samples_per_second", "tokens_per_second", "audio_seconds_per_second"}


def training_entries(out: Path, step: int) -> list[dict]:
    history = json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())["log_history"]
    return [{k: v for k, v in e.items() if k not in TIMINGS} for e in history if "loss" in e]


def sampled(base_args: dict, tmp_path: Path, **extra: str) -> dict:
    return base_args | {"sample_steps": "5", "sample_at_checkpoints": "true", "sample_max_audio_seconds": "0.5",
                        "sample_prompts_file": str(_prompts(tmp_path / "p.jsonl")), "lora_dropout": "0.05"} | extra


def run(args: dict) -> Path:
    train_main(parse_train_args(to_argv(args), clean_env()))
    return Path(args["output_dir"])


def test_samples_every_5_steps_and_at_checkpoints_leave_logs_and_adapter_identical(base_args, tmp_path) -> None:
    plain = run(base_args | {"lora_dropout": "0.05", "output_dir": str(tmp_path / "plain")})
    with_samples = run(sampled(base_args, tmp_path, output_dir=str(tmp_path / "sampled")))
    assert sorted(p.name for p in (with_samples / "samples").iterdir()) == ["step-10", "step-15", "step-20", "step-5"]
    expected = training_entries(plain, 20)
    assert [e["step"] for e in expected] == [1, 5, 10, 15, 20]  # the first step, then every 5th
    assert training_entries(with_samples, 20) == expected
    adapter = "lora_adapters/adapter_model.safetensors"
    assert (with_samples / adapter).read_bytes() == (plain / adapter).read_bytes()
    history = json.loads((with_samples / "checkpoint-20" / "trainer_state.json").read_text())["log_history"]
    assert [e["sample_step"] for e in history if "sample_step" in e] == [5, 10, 15, 20]  # reported once per step


def test_resume_from_a_checkpoint_taken_with_samples_reproduces_the_uninterrupted_losses(base_args, tmp_path) -> None:
    whole = run(sampled(base_args, tmp_path, sample_steps="0", output_dir=str(tmp_path / "whole"),
                        logging_steps="1"))
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(whole / "checkpoint-10", resumed_dir / "checkpoint-10")
    resumed = run(sampled(base_args, tmp_path, sample_steps="0", output_dir=str(resumed_dir), logging_steps="1"))
    losses = {e["step"]: e["loss"] for e in training_entries(whole, 20) if e["step"] > 10}
    again = {e["step"]: e["loss"] for e in training_entries(resumed, 20) if e["step"] > 10}
    assert list(losses) == list(range(11, 21))
    assert again == losses
    assert (resumed / "lora_adapters/adapter_model.safetensors").read_bytes() == \
        (whole / "lora_adapters/adapter_model.safetensors").read_bytes()


def test_forked_random_state_puts_every_generator_back() -> None:
    import random

    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    expected = (torch.rand(2), random.random(), np.random.rand())
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    with forked_random_state():
        torch.manual_seed(99), torch.rand(5), random.random(), np.random.rand(7)
    assert torch.equal(torch.rand(2), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


def test_isolated_restores_mode_use_cache_and_grad_mode() -> None:
    from transformers import HiggsAudioV2Config

    model = torch.nn.Linear(2, 2)
    model.config = HiggsAudioV2Config(use_cache=False)  # the real configuration class, where use_cache lives
    model.train()
    with isolated(model):
        model.eval()
        model.config.use_cache = True
        torch.set_grad_enabled(False)
    assert model.training and model.config.use_cache is False and torch.is_grad_enabled()


def test_a_report_from_a_step_end_keeps_the_trainers_logging_control() -> None:
    from transformers import TrainerControl

    class Recorder:  # the one Trainer method the report calls, with the Trainer's own on_log behaviour
        def __init__(self) -> None:
            self.control, self.logged = TrainerControl(should_log=True, should_save=True), []

        def log(self, logs):
            self.logged.append(logs)
            self.control.should_log = False  # what CallbackHandler.on_log does

    trainer = Recorder()
    log_keeping_control(trainer)({"sample_step": 5.0})
    assert trainer.logged == [{"sample_step": 5.0}]
    assert trainer.control.should_log and trainer.control.should_save
