"""`--nan_policy`: a NaN loss injected for real (the model's embedding weights set to NaN for one step by a
callback, or a checkpoint on disk with NaN weights) stops the run with exit code 4 saving nothing new, or
skips the step without touching the weights."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from tests.conftest import clean_env
from trainer import errors
from trainer.commands.train import build
from trainer.config.cli import parse_train_args
from trainer.errors import Stopped
from trainer.train.checkpoint import MARKER


def _cfg(args: dict[str, str], **over: str):
    return parse_train_args([], {k.upper(): v for k, v in (args | over).items()})


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _digests(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


class _PoisonOneStep(TrainerCallback):
    """Sets the input embeddings to NaN for optimizer step `step` only, and records the trainable weights
    just before and just after it (and after the step that follows)."""

    def __init__(self, trainer, step: int) -> None:
        self.trainer, self.step = trainer, step
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        self.next: dict[str, torch.Tensor] = {}
        self._saved: torch.Tensor | None = None
        self.on_begin = None

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step + 1 == self.step:
            self.before = _trainable(self.trainer.model)
            weight = self.trainer.model.get_input_embeddings().weight
            self._saved = weight.detach().clone()
            weight.data.fill_(float("nan"))
            if self.on_begin is not None:
                self.on_begin()

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step and self._saved is not None:
            self.trainer.model.get_input_embeddings().weight.data.copy_(self._saved)
            self.after = _trainable(self.trainer.model)
        elif state.global_step == self.step + 1:
            self.next = _trainable(self.trainer.model)


def test_skip_policy_leaves_the_weights_and_optimizer_state_alone_counts_the_step_and_trains_on(
    base_args,
) -> None:
    cfg = _cfg(base_args, nan_policy="skip", max_steps="6", save_steps="100", logging_steps="1")
    trainer, _, resume = build(cfg)
    poison = _PoisonOneStep(trainer, step=3)
    trainer.add_callback(poison)
    trainer.train(resume_from_checkpoint=resume)

    assert poison.before and poison.after and poison.next
    assert all(torch.equal(poison.before[n], poison.after[n]) for n in poison.before), "a skipped step moved weights"
    assert any(not torch.equal(poison.after[n], poison.next[n]) for n in poison.after), "training did not go on"
    assert all(torch.isfinite(v).all() for v in poison.next.values())
    # AdamW counted 5 updates for 6 steps: the skipped one left its moments and step count alone.
    steps = {float(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()}
    assert steps == {5.0}
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in train_logs] == [1, 2, 3, 4, 5, 6]
    assert [h["nan_steps_skipped"] for h in train_logs] == [0, 0, 1, 1, 1, 1]
    assert math.isnan(train_logs[2]["loss"]) and all(math.isfinite(h["loss"]) for h in train_logs[3:])
    assert trainer.state.global_step == 6


def test_stop_policy_raises_exit_code_4_naming_the_step_and_saves_nothing_new(base_args) -> None:
    out = Path(base_args["output_dir"])
    cfg = _cfg(base_args, max_steps="20", save_steps="5", logging_steps="1")
    trainer, _, resume = build(cfg)
    poison = _PoisonOneStep(trainer, step=8)
    digests: dict[str, str] = {}

    def snapshot() -> None:
        # checkpoint-5's optimizer state may still be written in the background (--async_save) when step 8
        # begins: the snapshot is of the complete checkpoint, the one the stop must leave alone.
        trainer.finish_pending_save()
        digests.update(_digests(out / "checkpoint-5"))

    poison.on_begin = snapshot
    trainer.add_callback(poison)
    with pytest.raises(Stopped) as stopped:
        trainer.train(resume_from_checkpoint=resume)

    assert stopped.value.code == errors.DIVERGED == 4
    assert stopped.value.reason.startswith("training diverged: the loss was nan at step 8 (--nan_policy stop)")
    assert "checkpoint-5 stays the resume point" in stopped.value.reason
    # The weights were not updated by the NaN step, and nothing was written for it or after it.
    assert all(torch.equal(poison.before[n], v) for n, v in _trainable(trainer.model).items())
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-5"]
    assert MARKER in digests and _digests(out / "checkpoint-5") == digests
    assert not (out / "lora_adapters").exists()
    # Lost: steps 6 and 7, the steps since the last complete checkpoint.
    assert trainer.state.global_step == 7


@pytest.mark.slow
def test_nan_weights_under_two_ranks_exit_4_through_the_launcher_and_keep_the_resume_point(
    base_args, tiny_ckpt, tmp_path
) -> None:
    from safetensors.torch import load_file, save_file

    out = Path(base_args["output_dir"])
    env = clean_env(**{k.upper(): v for k, v in base_args.items()})
    env.update(OMP_NUM_THREADS="1", NPROC_PER_NODE="2", TERMINATION_LOG=str(tmp_path / "termination-log"),
               MAX_STEPS="5", SAVE_STEPS="5", LOGGING_STEPS="1")
    first = subprocess.run([sys.executable, "-m", "trainer", "launch"], env=env, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "checkpoint-5" / MARKER).is_file()
    shutil.rmtree(out / "lora_adapters")
    kept = _digests(out / "checkpoint-5")

    # The same model with NaN text embeddings: the next step's loss is NaN on both ranks.
    poisoned = tmp_path / "nan-model"
    shutil.copytree(tiny_ckpt[0], poisoned)
    weights = load_file(str(poisoned / "model.safetensors"))
    weights["model.embed_tokens.weight"].fill_(float("nan"))
    save_file(weights, str(poisoned / "model.safetensors"), metadata={"format": "pt"})
    env.update(MODEL_PATH=str(poisoned), MAX_STEPS="10")
    second = subprocess.run([sys.executable, "-m", "trainer", "launch"], env=env, capture_output=True, text=True,
                            timeout=600)

    assert second.returncode == errors.DIVERGED, second.stderr[-3000:]
    assert re.search(r"resuming from \S*checkpoint-5 at step 5\b", second.stderr)
    message = (tmp_path / "termination-log").read_text()
    assert re.match(r"rank \d: training diverged: the loss was nan at step 6 \(--nan_policy stop\)", message)
    assert "checkpoint-5 stays the resume point" in message
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-5"]
    assert _digests(out / "checkpoint-5") == kept
    assert json.loads((out / "checkpoint-5" / MARKER).read_text())["step"] == 5
    assert not (out / "lora_adapters").exists()
