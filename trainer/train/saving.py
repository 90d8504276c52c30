"""`CheckpointWriter`: the object a trainer owns to make its checkpoints complete or ignored.

Why a checkpoint counts only once its marker is written, and in which order its parts reach the disk:
docs/design/checkpoints.md.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer import dist as ranks
from trainer import errors
from trainer.errors import Stopped
from trainer.train import checkpoint as ckpt
from trainer.train.background_save import PendingCheckpoint, Written

log = logging.getLogger(__name__)


def _written_flag(checkpoint_name: str) -> str:
    """The store flag rank 0's writing thread sets once `checkpoint_name` has ended, complete or failed."""
    return f"written/{checkpoint_name}"


class CheckpointWriter(TrainerCallback):
    """Begins, finishes and ends the checkpoints of the trainer that owns it, through the Trainer's events.

    - `begin` (from `on_step_end` / `on_evaluate` / `on_epoch_end` of a step that saves: the writer is the
      last callback, so every other one has said by then whether this step saves): the previous background
      write ends first, a `checkpoint-N` an earlier run left at this step is removed, and every rank waits
      for that before any writes there.
    - the Trainer writes the weights (our `save_model`), optimizer, scheduler, RNG and trainer state.
    - `on_save`: every rank has written; rank 0 flushes, writes the marker and rotates old checkpoints, or
      with `--async_save` hands those (with LoRA the optimizer and scheduler state too) to a background
      thread (`trainer.train.background_save`).
    - `poll` (each step's begin): a background write that has ended is logged, or its error raised.
    - `settle` (every way out of `train()`): the background write ends; an error of its own is logged, not
      raised, since the run is already stopping with another.
    - `failed`: an error raised between `begin` and `on_save`; out of disk space, the partial checkpoint is
      removed and the answer is `Stopped` with exit code 5, naming the path and the space a checkpoint needs.
    """

    def __init__(self, trainer: Any, keep_checkpoints: int = 0, async_save: bool = True) -> None:
        self.trainer = trainer
        self.keep_checkpoints = keep_checkpoints
        self.async_save = async_save
        self.resume_state: dict[str, Any] | None = None  # what the background write of the save under way gets
        self._begun: tuple[int, float] | None = None  # (step, start time) of the save under way
        self._pending: PendingCheckpoint | None = None  # the checkpoint being finished in the background
        self._last_background_step: int | None = None  # every rank: the last one rank 0 finished in the background
        self._unlogged: list[Written] = []  # ended during a step end, logged at the next safe point

    # ---- what is saved and how --------------------------------------------------------------------
    @cached_property
    def peft_model(self) -> Any:
        """The `PeftModel` inside the DDP wrapper, or None with full fine-tuning.

        Looked up once: a save asks several times, unwrapping walks every module (about a millisecond), and the model
        stays the same object.
        """
        from peft import PeftModel

        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        return model if isinstance(model, PeftModel) else None

    @property
    def in_background(self) -> bool:
        """Whether rank 0 finishes a checkpoint on a background thread (`--async_save`, DDP).

        The same answer on every rank, which take the same barriers.
        """
        t = self.trainer
        return self.async_save and not (t.is_deepspeed_enabled or t.is_fsdp_enabled)

    def path(self, step: int) -> Path:
        """The directory of the checkpoint of `step`."""
        return Path(self.trainer.args.output_dir) / f"checkpoint-{step}"

    # ---- the save's lifecycle -----------------------------------------------------------------------
    def begin(self) -> None:
        """Make way for this step's checkpoint; once per step, on every rank."""
        t = self.trainer
        step = t.state.global_step
        if self._begun is not None and self._begun[0] == step:
            return
        # One background write at most: the previous one ends (or fails) first. Logged after this step's own
        # log: a log during a step end resets the Trainer's decision to log at that step.
        self.finish(log_now=False)
        started = time.monotonic()  # a wait for the previous write above counts as that checkpoint's
        path = self.path(step)
        if t.args.should_save:
            ckpt.clear_for_save(path)  # an earlier run's checkpoint-N: its marker must not outlive it
            if self.in_background:  # nor the flag an earlier attempt set when its write of N ended
                ranks.clear_flag(_written_flag(path.name))
        t.accelerator.wait_for_everyone()  # no rank writes into it before it is gone
        self._begun = (step, started)

    def _rotate(self) -> list[Path]:
        best = self.trainer.state.best_model_checkpoint
        return ckpt.rotate(self.trainer.args.output_dir, self.keep_checkpoints, protect=Path(best) if best else None)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Complete the checkpoint the Trainer just saved: its marker, now or from the background writer."""
        self._log_ended()
        if self._begun is None or self._begun[0] != state.global_step:
            self.begin()  # a save no step end announced: too late to clear the directory, but counted all the same
        assert self._begun is not None
        step, started = self._begun
        self._begun = None
        path, t = self.path(step), self.trainer
        try:
            t.accelerator.wait_for_everyone()  # every rank's RNG state is on disk before the marker
            if self.in_background:
                self._last_background_step = step
                if not args.should_save:
                    return  # the other ranks: rank 0 finishes the checkpoint and logs it
                files, guard = self.resume_state or {}, None
                if files:  # LoRA: the optimizer's live tensors, which its next step must not change before the copy
                    guard = getattr(t.optimizer, "optimizer", t.optimizer)  # inside accelerate's wrapper
                self._pending = PendingCheckpoint(path, step, files, started=started, rotate=self._rotate,
                                                  guard=guard, on_end=partial(ranks.announce, _written_flag(path.name)))
                self._pending.blocking_seconds += time.monotonic() - started
                return
            size = 0
            if args.should_save:
                ckpt.sync_files(path)  # on stable storage before the marker vouches for them
                size = ckpt.write_marker(path, step)
        except Exception as err:
            full = self._full(err, path, remove=args.should_save)
            if full is None:
                raise
            raise full from err
        finally:
            self.resume_state = None
        removed = self._rotate() if args.should_save else []
        t.accelerator.wait_for_everyone()
        seconds = time.monotonic() - started
        self._log(Written(path, step, seconds, seconds, size, removed))

    def failed(self, err: BaseException) -> BaseException:
        """What to raise for `err`, raised while a save was under way (or not).

        `Stopped` (exit code 5) when the disk is full, the partial checkpoint removed; else `err` itself.
        """
        begun, self._begun, self.resume_state = self._begun, None, None
        if begun is None or not isinstance(err, Exception):
            return err
        return self._full(err, self.path(begun[0]), remove=self.trainer.args.should_save) or err

    def _full(self, err: Exception, path: Path, *, remove: bool) -> Stopped | None:
        message = ckpt.out_of_space(err, path, self.checkpoint_bytes(), remove=remove)
        if message is None:
            return None
        return Stopped(errors.DISK_FULL, message)

    def poll(self) -> None:
        """A background write that has ended: logged, or its error raised. Never waits."""
        self._log_ended()
        self.finish(wait=False)

    def finish(self, *, wait: bool = True, log_now: bool = True) -> None:
        """End the background write of the last checkpoint, if there is one.

        Log it once it is complete, or raise what it failed with (out of disk: `Stopped` with exit code 5, the partial
        checkpoint removed). With `wait=False` only a write that has already ended is dealt with.
        """
        pending = self._pending
        if pending is None or not (wait or pending.done()):
            return
        self._pending = None
        try:
            written = pending.wait()
        except Exception as err:
            full = self._full(err, pending.path, remove=True)
            if full is not None:
                raise full from err
            log.error("writing the resume state of %s failed: the checkpoint does not count, and a restart "
                      "resumes from the previous one", pending.path)
            raise
        self._unlogged.append(written)
        if log_now:
            self._log_ended()

    def settle(self) -> None:
        """`finish`, with an error of the write logged instead of raised.

        For paths that are already stopping with an error of their own, which is the one to report.

        The other ranks wait for rank 0's write to end, bounded by `--ddp_timeout`: a rank that stops makes
        torchrun stop the rest, and rank 0 would be killed mid-write. That would cost the checkpoint (a full
        model's flush can outlast torchrun's grace period) and report a killed rank instead of this error.
        No barrier: rank 0 may never get here, and the flag is set by its writing thread, not its training.
        """
        if self._pending is None and self._last_background_step is not None and not self.trainer.args.should_save:
            name = f"checkpoint-{self._last_background_step}"
            self._last_background_step = None  # waited for once: a NaN stop comes here again on its way out
            started = time.monotonic()
            if not ranks.wait_for_flag(_written_flag(name)):
                log.warning("stopping without knowing whether rank 0 has finished writing %s", name)
            elif time.monotonic() - started > 1:
                log.warning("waited %.0f s for rank 0 to finish writing %s before stopping", time.monotonic() - started,
                            name)
            return
        try:
            self.finish()
        except BaseException as err:
            log.error("the last checkpoint's background write failed too: %s", err)

    def _log_ended(self) -> None:
        while self._unlogged:
            self._log(self._unlogged.pop(0))

    def _log(self, written: Written) -> None:
        for removed in written.removed:
            log.info("removed old checkpoint %s (save_total_limit %d)", removed, self.keep_checkpoints)
        self.trainer.log(
            {
                "checkpoint_step": float(written.step),
                "checkpoint_seconds": written.seconds,
                "checkpoint_blocking_seconds": written.blocking_seconds,
                "checkpoint_bytes": float(written.size),
            }
        )

    # ---- Trainer events -----------------------------------------------------------------------------
    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Deal with a background write that has ended since the last step."""
        self.poll()  # not at the step end: a log there resets the Trainer's decision to log at that step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Make way for the checkpoint the Trainer is about to save at this step."""
        if control.should_save:
            self.begin()

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Make way for a checkpoint asked for during evaluation."""
        if control.should_save:  # a signal during evaluation asks for a save after it
            self.begin()

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Make way for a checkpoint due at the epoch's end."""
        if control.should_save:
            self.begin()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """End the last background write, then reload the best adapter when asked to."""
        self.finish()  # the best checkpoint may be the one still being written
        if self.trainer.reload_best_adapter and state.best_model_checkpoint:
            self.load_adapter(Path(state.best_model_checkpoint), self.trainer.model)

    # ---- loading ------------------------------------------------------------------------------------
    def load_adapter(self, checkpoint: Path, model: Any) -> None:
        """Load a checkpoint's LoRA adapter into `model`; an adapter that does not fit is an error, not a warning."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = checkpoint / ckpt.ADAPTER_DIR / "adapter_model.safetensors"
        if not adapter.is_file():
            raise FileNotFoundError(f"{checkpoint}: no LoRA adapter at {adapter}")
        result = set_peft_model_state_dict(self.trainer.accelerator.unwrap_model(model), load_file(str(adapter)))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise RuntimeError(f"{adapter}: adapter does not fit this model (unexpected keys {unexpected[:3]})")
        log.info("loaded LoRA adapter from %s", adapter)

    # ---- disk space ---------------------------------------------------------------------------------
    def checkpoint_bytes(self) -> int:
        """What a checkpoint needs on disk.

        The previous one's size, else the weights it saves and AdamW's two fp32 moments per trainable weight.
        """
        previous = ckpt.last_size(self.trainer.args.output_dir)
        if previous:
            return previous
        model = self.trainer.model
        return self.saved_weight_bytes() + sum(2 * 4 * p.numel() for p in model.parameters() if p.requires_grad)

    def saved_weight_bytes(self) -> int:
        """Bytes of the weights a save writes: the trainable ones (the adapter) with LoRA, all without."""
        peft = self.peft_model is not None
        return sum(p.numel() * p.element_size() for p in self.trainer.model.parameters() if p.requires_grad or not peft)

    def warn_if_short_of_disk(self) -> None:
        """Warn (rank 0) when the output volume cannot hold the next checkpoint.

        Only a warning: a checkpoint of a resumed run is the previous one's size, and the user may free
        space before the first save. The save itself still fails cleanly (exit 5) if it does not fit.
        """
        if not self.trainer.args.should_save:
            return
        out = Path(self.trainer.args.output_dir)
        free, needed = ckpt.free_bytes(out), self.checkpoint_bytes()
        if free < needed:
            log.warning(
                "%s has %s free, and a checkpoint needs about %s: the next save will fail with exit code %d unless "
                "space is freed or OUTPUT_DIR moves to a larger volume",
                out, ckpt.human_bytes(free), ckpt.human_bytes(needed), errors.DISK_FULL,
            )
