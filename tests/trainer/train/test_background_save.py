"""Checkpoints finished on a background thread (`--async_save`, LoRA runs): real training of the tiny model in
this process, real files.

Where a test needs a write to be in flight, it holds it at a gate: `background_save.write_state`, the function
the thread writes each file with, is wrapped to wait for an event and then write for real. Where a test needs a
write to fail, the wrapper raises the error a failing disk would (the real full disk is in test_checkpoint.py).
"""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer import dist
from trainer.commands.train import build
from trainer.config.cli import parse_train_args
from trainer.train import background_save, checkpoint
from trainer.train.checkpoint import MARKER, is_complete, newest_complete


def _trainer(args: dict[str, str], **over: str) -> Any:
    cfg = parse_train_args([], {k.upper(): v for k, v in (args | over).items()})
    trainer, _, _ = build(cfg)
    return trainer


def _trained(args: dict[str, str], **over: str) -> tuple[Any, Path]:
    """A LoRA trainer after 3 steps, the last one saved (checkpoint-3, complete), and its output directory."""
    trainer = _trainer(args, max_steps="3", save_steps="1000", **over)
    trainer.train()
    out = Path(trainer.args.output_dir)
    assert is_complete(out / "checkpoint-3")
    return trainer, out


def _save(trainer: Any) -> Path:
    """Save the next step's checkpoint as the Trainer does at a step end; its path."""
    trainer.state.global_step += 1
    trainer.checkpoints.begin()  # what the writer does at the step end that asks for a save
    trainer._save_checkpoint(trainer.model, None)
    trainer.checkpoints.on_save(trainer.args, trainer.state, trainer.control)
    return Path(trainer.args.output_dir) / f"checkpoint-{trainer.state.global_step}"


class _Gate:
    """Holds every background write until `open()`; records the paths as they are reached."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = threading.Event()
        self.reached = threading.Event()
        self.seen: list[Path] = []
        real = background_save.write_state

        def held(state: Any, path: Path) -> None:
            self.seen.append(path)
            self.reached.set()
            assert self.opened.wait(60), "the test never opened the gate"
            real(state, path)

        monkeypatch.setattr(background_save, "write_state", held)

    def open(self) -> None:
        self.opened.set()


def _open_after(gate: _Gate, seconds: float) -> None:
    """Open `gate` `seconds` after a write first reaches it."""
    assert gate.reached.wait(60)
    threading.Event().wait(seconds)
    gate.open()


def _tensors(state: Any) -> list[torch.Tensor]:
    """The optimizer state's tensors in a fixed order."""
    return [t for _, per_param in sorted(state["state"].items()) for _, t in sorted(per_param.items())]


def test_a_background_save_counts_only_once_written_and_holds_the_state_of_its_own_step(
    base_args, monkeypatch
) -> None:
    trainer, out = _trained(base_args)
    assert trainer.saves_in_background
    at_save = [t.clone() for t in _tensors(trainer.optimizer.state_dict())]
    gate = _Gate(monkeypatch)
    logged_before = len(trainer.state.log_history)

    path = _save(trainer)  # returns once the adapter, RNG and trainer state are written

    assert gate.reached.wait(30)
    assert (path / "lora_adapters" / "adapter_model.safetensors").is_file()
    assert (path / "trainer_state.json").is_file()
    assert not (path / "optimizer.pt").exists()
    assert not (path / MARKER).exists()
    assert newest_complete(out)[0] == out / "checkpoint-3"  # a restart now would resume from the previous one
    # The next optimizer step changes the moments in place while the write is still held.
    for moments in trainer.optimizer.state.values():
        moments["exp_avg"].add_(1.0)
    trainer.finish_pending_save(wait=False)  # still in flight: nothing to do, nothing logged
    assert not is_complete(path)
    assert len(trainer.state.log_history) == logged_before  # logged once complete, not before

    gate.open()
    trainer.finish_pending_save()

    assert is_complete(path)
    saved = torch.load(path / "optimizer.pt", weights_only=True)
    assert len(_tensors(saved)) == len(at_save) > 0
    for written, expected in zip(_tensors(saved), at_save, strict=True):
        assert torch.equal(written, expected)  # the state of step 4, not the one changed after it
    logged = trainer.state.log_history[-1]
    assert logged["checkpoint_step"] == 4
    assert 0 < logged["checkpoint_blocking_seconds"] <= logged["checkpoint_seconds"]
    assert logged["checkpoint_bytes"] > 0


def test_the_next_optimizer_step_waits_until_the_background_thread_has_copied_the_state(
    base_args, monkeypatch
) -> None:
    trainer, _ = _trained(base_args)
    optimizer = trainer.optimizer.optimizer  # the torch optimizer inside accelerate's wrapper
    at_save = [t.clone() for t in _tensors(optimizer.state_dict())]
    copying, release = threading.Event(), threading.Event()
    real = background_save.host_copy

    def slow_copy(obj: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():  # the saving thread's copy, not the scheduler's
            copying.set()
            assert release.wait(60), "the test never released the copy"
        return real(obj)

    monkeypatch.setattr(background_save, "host_copy", slow_copy)
    path = _save(trainer)
    assert copying.wait(30)
    seen: dict[str, bool] = {}

    def let_go() -> None:
        try:
            seen["state_unchanged_while_copying"] = all(
                torch.equal(a, b) for a, b in zip(_tensors(optimizer.state_dict()), at_save, strict=True))
        finally:
            release.set()

    timer = threading.Timer(0.5, let_go)
    timer.start()
    for p in trainer.model.parameters():  # gradients as a backward leaves them, then the real step
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    optimizer.step()
    timer.join()
    trainer.finish_pending_save()

    assert seen == {"state_unchanged_while_copying": True}
    # The step's wait for the copy is time training waited for this checkpoint.
    assert trainer.state.log_history[-1]["checkpoint_step"] == 4
    assert trainer.state.log_history[-1]["checkpoint_blocking_seconds"] >= 0.4
    assert not all(torch.equal(a, b) for a, b in zip(_tensors(optimizer.state_dict()), at_save, strict=True))
    saved = torch.load(path / "optimizer.pt", weights_only=True)
    for written, expected in zip(_tensors(saved), at_save, strict=True):
        assert torch.equal(written, expected)


def test_the_next_save_waits_for_the_previous_background_write(base_args, monkeypatch) -> None:
    trainer, out = _trained(base_args, save_total_limit="2")
    gate = _Gate(monkeypatch)
    first = _save(trainer)
    assert gate.reached.wait(30)
    next_path = out / f"checkpoint-{trainer.state.global_step + 1}"
    seen_then: dict[str, bool] = {}

    def release() -> None:
        seen_then["next_started"] = next_path.exists()
        gate.open()

    timer = threading.Timer(2.0, release)
    timer.start()
    second = _save(trainer)  # must wait for `first` before it writes anything
    assert second == next_path
    timer.join()
    trainer.finish_pending_save()

    assert seen_then == {"next_started": False}
    assert is_complete(first) and is_complete(second)
    # The wait for the first write is the first checkpoint's blocking time, not part of the second's save.
    logged = {h["checkpoint_step"]: h for h in trainer.state.log_history if "checkpoint_step" in h}
    assert 1.9 <= logged[4]["checkpoint_blocking_seconds"] <= logged[4]["checkpoint_seconds"]
    # A tiny checkpoint takes ~0.05 s; 1.5 s leaves room for a loaded machine, and the 2 s wait would not fit.
    assert logged[5]["checkpoint_seconds"] < 1.5
    # Rotation (keep 2) ran after each marker: checkpoint-3 went once checkpoint-5 was complete.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]


def test_training_never_waits_longer_for_a_checkpoint_than_the_checkpoint_took(base_args, monkeypatch) -> None:
    # After its last timestamp the writing thread still tells the other ranks (a store round trip) and exits;
    # a wait that ends after that must not count more waiting than the save's own duration.
    trainer, _ = _trained(base_args)
    slow_tell = dist.announce

    def announce(name: str) -> None:
        time.sleep(0.3)
        slow_tell(name)

    monkeypatch.setattr(dist, "announce", announce)
    _save(trainer)
    trainer.finish_pending_save()  # waits for the thread, announcement included
    logged = [h for h in trainer.state.log_history if "checkpoint_step" in h][-1]
    assert logged["checkpoint_blocking_seconds"] >= 0.3
    assert logged["checkpoint_blocking_seconds"] <= logged["checkpoint_seconds"]


def test_sync_and_background_saves_write_the_same_resume_state(base_args, tmp_path) -> None:
    background, out_bg = _trained(base_args, output_dir=str(tmp_path / "bg"))
    synchronous, out_sync = _trained(base_args, output_dir=str(tmp_path / "sync"), async_save="false")
    assert background.saves_in_background and not synchronous.saves_in_background

    ckpt_bg, ckpt_sync = out_bg / "checkpoint-3", out_sync / "checkpoint-3"
    assert sorted(p.name for p in ckpt_bg.iterdir()) == sorted(p.name for p in ckpt_sync.iterdir())
    opt_bg, opt_sync = (torch.load(c / "optimizer.pt", weights_only=True) for c in (ckpt_bg, ckpt_sync))
    assert opt_bg["param_groups"] == opt_sync["param_groups"]
    for a, b in zip(_tensors(opt_bg), _tensors(opt_sync), strict=True):
        assert torch.equal(a, b)
    assert torch.load(ckpt_bg / "scheduler.pt", weights_only=True) == torch.load(
        ckpt_sync / "scheduler.pt", weights_only=True)


def test_a_failed_background_write_stops_training_before_the_next_save_and_leaves_no_marker(
    base_args, monkeypatch
) -> None:
    def failing(state: Any, path: Path) -> None:
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(background_save, "write_state", failing)
    trainer = _trainer(base_args, max_steps="8", save_steps="2", logging_steps="1")
    out = Path(trainer.args.output_dir)

    with pytest.raises(OSError, match="Input/output error"):
        trainer.train()

    # Seen at a step end after the save of step 2, at the latest when the save of step 4 waits for it.
    assert 2 <= trainer.state.global_step <= 4
    assert newest_complete(out)[0] is None
    assert not (out / "checkpoint-2" / MARKER).exists()
    assert not any(p.name == "optimizer.pt" for p in out.rglob("*"))
    assert not (out / "checkpoint-4").exists()  # the save of step 4, if reached, stopped before writing


class _FlushLog:
    """Records, in order, every flush (`checkpoint.sync_files`) and marker write (`checkpoint.write_marker`) and
    the thread each ran on; both still run for real. With `hold`, flushes wait for `open()` first."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, hold: bool = False) -> None:
        self.calls: list[tuple[str, Path, bool]] = []  # (what, path, on the main thread)
        self.opened = threading.Event()
        self.reached = threading.Event()
        if not hold:
            self.opened.set()
        real_sync, real_marker = checkpoint.sync_files, checkpoint.write_marker

        def sync_files(directory: Path) -> None:
            self.calls.append(("flush", Path(directory), threading.current_thread() is threading.main_thread()))
            self.reached.set()
            assert self.opened.wait(60), "the test never let the flush go on"
            real_sync(directory)

        def write_marker(ckpt: Path, step: int) -> int:
            self.calls.append(("marker", Path(ckpt), threading.current_thread() is threading.main_thread()))
            return real_marker(ckpt, step)

        monkeypatch.setattr(checkpoint, "sync_files", sync_files)
        monkeypatch.setattr(checkpoint, "write_marker", write_marker)

    def open(self) -> None:
        self.opened.set()


def test_async_save_false_flushes_and_marks_before_the_save_returns(base_args, monkeypatch) -> None:
    gate = _Gate(monkeypatch)  # a background write would wait here for ever: the gate is never opened
    trainer, _ = _trained(base_args, async_save="false")
    assert not trainer.saves_in_background
    flushes = _FlushLog(monkeypatch)
    path = _save(trainer)
    assert is_complete(path) and (path / "optimizer.pt").is_file()  # complete when the save returns
    assert trainer.state.log_history[-1]["checkpoint_step"] == 4
    # Every file is on stable storage before the marker vouches for it, and training waited for both.
    assert flushes.calls == [("flush", path, True), ("marker", path, True)]
    assert not gate.seen


def test_full_fine_tuning_writes_its_state_while_training_waits_and_flushes_and_marks_in_the_background(
    base_args, monkeypatch
) -> None:
    gate = _Gate(monkeypatch)  # nothing of a full checkpoint is handed to the thread to write
    trainer, out = _trained(base_args, use_lora="false")
    assert trainer.saves_in_background and not trainer.is_peft
    flushes = _FlushLog(monkeypatch, hold=True)

    path = _save(trainer)  # returns once the model and optimizer state are written, before the flush

    assert flushes.reached.wait(30)
    assert (path / "model.safetensors").is_file() and (path / "optimizer.pt").is_file()
    assert not (path / MARKER).exists()
    assert newest_complete(out)[0] == out / "checkpoint-3"
    # The next optimizer step does not wait for it: there is no copy to make.
    trainer.optimizer.step()
    flushes.open()
    trainer.finish_pending_save()

    assert is_complete(path)
    assert flushes.calls == [("flush", path, False), ("marker", path, False)]
    assert trainer.state.log_history[-1]["checkpoint_step"] == 4
    assert not gate.seen


def test_a_background_lora_save_flushes_every_file_before_its_marker(base_args, monkeypatch) -> None:
    trainer, _ = _trained(base_args)
    flushes = _FlushLog(monkeypatch)
    path = _save(trainer)
    trainer.finish_pending_save()
    assert is_complete(path)
    assert flushes.calls == [("flush", path, False), ("marker", path, False)]


def test_training_ends_only_once_the_last_checkpoint_is_complete_whatever_ends_it(base_args, monkeypatch) -> None:
    from transformers import TrainerCallback

    gate = _Gate(monkeypatch)
    timer = threading.Timer(0.5, gate.open)  # held well past the end of training
    trainer = _trainer(base_args, max_steps="3", save_steps="1000")
    timer.start()
    trainer.train()
    timer.join()
    assert is_complete(Path(trainer.args.output_dir) / "checkpoint-3")

    class Crash(TrainerCallback):
        """An error at the step after a save (a lost peer, a bug), while that save is still being written."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise RuntimeError("failure at step 3")

    gate = _Gate(monkeypatch)
    timer = threading.Timer(0.5, gate.open)
    crashing = _trainer(base_args, max_steps="8", save_steps="2", output_dir=base_args["output_dir"] + "-crash")
    crashing.add_callback(Crash())
    timer.start()
    with pytest.raises(RuntimeError, match="failure at step 3"):
        crashing.train()
    timer.join()
    assert is_complete(Path(crashing.args.output_dir) / "checkpoint-2")


def test_load_best_model_at_end_reloads_the_adapter_of_the_lowest_eval_loss(base_args, caplog) -> None:
    # The reload comes after the last save, whose write may still be going on in the background.
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class Damage(TrainerCallback):
        """Once checkpoint-10 is written, scramble the adapter: the eval loss at step 15 is then the worst, so
        the reload must bring back weights other than the last ones, or the comparison below proves nothing."""

        def on_save(self, args, state, control, model=None, **kw):
            if state.global_step == 10:
                with torch.no_grad():
                    for name, param in model.named_parameters():
                        if "lora_B" in name:
                            param.add_(torch.randn_like(param) * 10)

    trainer = _trainer(base_args, disable_eval="false", validation_split="0.1", eval_steps="5", save_steps="5",
                       max_steps="15", load_best_model_at_end="true", learning_rate="0.005")
    trainer.add_callback(Damage())
    with caplog.at_level("INFO", logger="trainer.train.saving"):
        trainer.train()

    evals = {e["step"]: e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e}
    assert sorted(evals) == [5, 10, 15]
    best_step = min(evals, key=evals.get)
    assert best_step != 15, f"the best checkpoint is the last one ({evals}): the damage did not take"
    best = Path(trainer.args.output_dir) / f"checkpoint-{best_step}"
    assert Path(trainer.state.best_model_checkpoint) == best and is_complete(best)
    assert f"loaded LoRA adapter from {best / 'lora_adapters' / 'adapter_model.safetensors'}" in caplog.text
    saved = load_file(str(best / "lora_adapters" / "adapter_model.safetensors"))
    live = get_peft_model_state_dict(trainer.accelerator.unwrap_model(trainer.model))
    assert saved.keys() == live.keys()
    assert all(torch.equal(saved[k], live[k].cpu()) for k in saved)


def test_a_diverged_run_names_the_checkpoint_whose_background_write_was_still_going_on(
    base_args, monkeypatch
) -> None:
    from tests.trainer.train.test_nan_guard import _PoisonOneStep
    from trainer.errors import Stopped

    gate = _Gate(monkeypatch)
    trainer = _trainer(base_args, max_steps="20", save_steps="5", logging_steps="1")
    trainer.add_callback(_PoisonOneStep(trainer, step=6))  # the step right after checkpoint-5's save
    releaser = threading.Thread(target=_open_after, args=(gate, 0.5))  # held until well past step 6
    releaser.start()
    with pytest.raises(Stopped) as stopped:
        trainer.train()
    releaser.join()

    assert "checkpoint-5 stays the resume point" in stopped.value.reason
    assert is_complete(Path(trainer.args.output_dir) / "checkpoint-5")
