"""The checkpoint lifecycle as `Trainer` hooks: where a save goes, when it counts, how it ends, what loads it.

`CheckpointingTrainer` holds those hooks, so that a checkpoint is complete or ignored, never half-written.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from trainer import dist as ranks
from trainer import errors
from trainer.errors import Stopped
from trainer.train import checkpoint as ckpt
from trainer.train.background_save import OPTIMIZER_FILE, SCHEDULER_FILE, PendingCheckpoint, Written, host_copy

log = logging.getLogger(__name__)


def _written_flag(checkpoint_name: str) -> str:
    """The store flag rank 0's writing thread sets once `checkpoint_name` has ended, complete or failed."""
    return f"written/{checkpoint_name}"


class CheckpointingTrainer(Trainer):
    """A `Trainer` whose checkpoints are complete or ignored, written partly in the background.

    Each hook calls `super()` where there is one:
    - `_save` / `_save_checkpoint` / `_load_from_checkpoint`: the LoRA adapter lives in `lora_adapters/`,
      a checkpoint gets its completeness marker after every rank has written, rotation happens after that;
      a `checkpoint-N` an earlier run left at the same step is removed before any rank writes there. A save
      that fails for lack of disk space removes its partial directory and stops with exit code 5, naming the
      path and the space a checkpoint needs; `warn_if_short_of_disk` says so before the first step.
    - `_save_optimizer_and_scheduler` / `finish_pending_save` / `train`: with `--async_save` a checkpoint's
      flush, marker and rotation happen on a background thread (`trainer.train.background_save`), with LoRA
      its optimizer and scheduler state too; every way out of `train()` waits for that write.
    """

    def __init__(self, *args: Any, keep_checkpoints: int = 0, async_save: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_checkpoints = keep_checkpoints
        self.async_save = async_save
        self._resume_state: dict[str, Any] | None = None  # what the background write of the save under way gets
        self._pending: PendingCheckpoint | None = None  # the checkpoint being finished in the background
        self._last_background_step: int | None = None  # every rank: the last one rank 0 finished in the background

    @property
    def is_peft(self) -> bool:
        return self._peft_model is not None

    @cached_property
    def _peft_model(self) -> Any:
        """The `PeftModel` inside the DDP wrapper, or None with full fine-tuning. Looked up once: a save asks
        several times, unwrapping walks every module (about a millisecond), and the model stays the same object."""
        from peft import PeftModel

        model = self.accelerator.unwrap_model(self.model)
        return model if isinstance(model, PeftModel) else None

    @property
    def saves_in_background(self) -> bool:
        """Whether a checkpoint is finished on a background thread of rank 0 (`--async_save`, DDP): its flush
        to stable storage, marker and rotation, and with LoRA its optimizer and scheduler state too. The same
        answer on every rank, which take the same barriers."""
        return self.async_save and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.is_peft:
            if self.args.should_save:
                self._peft_model.save_pretrained(str(Path(output_dir) / ckpt.ADAPTER_DIR), safe_serialization=True)
            return
        super()._save(output_dir, state_dict)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not (self.saves_in_background and self.is_peft and self.args.should_save):
            # Full fine-tuning writes it here: a host copy would be the model's size twice over.
            return super()._save_optimizer_and_scheduler(output_dir)
        # The optimizer's live tensors: the background thread copies them, and the next optimizer step waits for
        # that copy (PendingCheckpoint's guard). The scheduler's few numbers are copied here.
        self._resume_state = {
            OPTIMIZER_FILE: self.optimizer.state_dict(),
            SCHEDULER_FILE: host_copy(self.lr_scheduler.state_dict()),
        }

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        self.finish_pending_save()  # one background write at most: the previous one ends (or fails) first
        started = time.monotonic()  # a wait for the previous write above counts as that checkpoint's
        path = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        best = Path(self.state.best_model_checkpoint) if self.state.best_model_checkpoint else None

        def rotate() -> list[Path]:
            return ckpt.rotate(self.args.output_dir, self.keep_checkpoints, protect=best)

        try:
            if self.args.should_save:
                ckpt.clear_for_save(path)  # an earlier run's checkpoint-N: its marker must not outlive it
                if self.saves_in_background:  # nor the flag an earlier attempt set when its write of N ended
                    ranks.clear_flag(_written_flag(path.name))
            self.accelerator.wait_for_everyone()  # no rank writes into it before it is gone
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank's RNG state is on disk before the marker
            if self.saves_in_background:
                self._last_background_step = self.state.global_step
                if not self.args.should_save:
                    return  # the other ranks: rank 0 finishes the checkpoint and logs it
                files, guard = self._resume_state or {}, None
                if files:  # LoRA: the optimizer's live tensors, which its next step must not change before the copy
                    guard = getattr(self.optimizer, "optimizer", self.optimizer)  # inside accelerate's wrapper
                self._pending = PendingCheckpoint(path, self.state.global_step, files, started=started,
                                                  rotate=rotate, guard=guard,
                                                  on_end=partial(ranks.announce, _written_flag(path.name)))
                self._pending.blocking_seconds += time.monotonic() - started
                return
            size = 0
            if self.args.should_save:
                ckpt.sync_files(path)  # on stable storage before the marker vouches for them
                size = ckpt.write_marker(path, self.state.global_step)
        except Exception as err:
            full = ckpt.out_of_space(err, path, self._checkpoint_bytes(), remove=self.args.should_save)
            if full is None:
                raise
            raise Stopped(errors.DISK_FULL, full) from err
        finally:
            self._resume_state = None
        removed = rotate() if self.args.should_save else []
        self.accelerator.wait_for_everyone()
        seconds = time.monotonic() - started
        self._log_checkpoint(Written(path, self.state.global_step, seconds, seconds, size, removed))

    def finish_pending_save(self, *, wait: bool = True) -> None:
        """End the background write of the last checkpoint, if there is one: log it once it is complete,
        or raise what it failed with (out of disk: `Stopped` with exit code 5, the partial checkpoint
        removed). With `wait=False` only a write that has already ended is dealt with."""
        pending = self._pending
        if pending is None or not (wait or pending.done()):
            return
        self._pending = None
        try:
            written = pending.wait()
        except Exception as err:
            full = ckpt.out_of_space(err, pending.path, self._checkpoint_bytes(), remove=True)
            if full is not None:
                raise Stopped(errors.DISK_FULL, full) from err
            log.error("writing the resume state of %s failed: the checkpoint does not count, and a restart "
                      "resumes from the previous one", pending.path)
            raise
        self._log_checkpoint(written)

    def _log_checkpoint(self, written: Written) -> None:
        for removed in written.removed:
            log.info("removed old checkpoint %s (save_total_limit %d)", removed, self.keep_checkpoints)
        self.log(
            {
                "checkpoint_step": float(written.step),
                "checkpoint_seconds": written.seconds,
                "checkpoint_blocking_seconds": written.blocking_seconds,
                "checkpoint_bytes": float(written.size),
            }
        )

    def train(self, *args: Any, **kwargs: Any) -> Any:
        # Whatever ends training, the last checkpoint's background write ends first: a run that stops (a
        # signal, a diverged loss, a lost peer) leaves that checkpoint complete, and the first error stands.
        try:
            result = super().train(*args, **kwargs)
        except BaseException:
            self._settle_pending_save()
            raise
        self.finish_pending_save()
        if self.saves_in_background:
            # Only rank 0 waited above. The others must not leave before it: a rank that exits (a signal stop
            # exits with 143) makes torchrun stop the rest, and rank 0 would be killed mid-write. A normal end
            # is a point every rank reaches; an exception above may not be, so no barrier there.
            self.accelerator.wait_for_everyone()
        return result

    def _settle_pending_save(self) -> None:
        """`finish_pending_save`, with an error of the write logged instead of raised: for paths that are
        already stopping with an error of their own, which is the one to report.

        The other ranks wait for rank 0's write to end, bounded by `--ddp_timeout`: a rank that stops makes
        torchrun stop the rest, and rank 0 would be killed mid-write. That would cost the checkpoint (a full
        model's flush can outlast torchrun's grace period) and report a killed rank instead of this error.
        No barrier: rank 0 may never get here, and the flag is set by its writing thread, not its training.
        """
        if self._pending is None and self._last_background_step is not None and not self.args.should_save:
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
            self.finish_pending_save()
        except BaseException as err:
            log.error("the last checkpoint's background write failed too: %s", err)

    def _checkpoint_bytes(self) -> int:
        """What a checkpoint needs on disk: the previous one's size, else the weights it saves and AdamW's two
        fp32 moments per trainable weight."""
        previous = ckpt.last_size(self.args.output_dir)
        if previous:
            return previous
        return self.saved_weight_bytes() + sum(2 * 4 * p.numel() for p in self.model.parameters() if p.requires_grad)

    def saved_weight_bytes(self) -> int:
        """Bytes of the weights a save writes: the trainable ones (the adapter) with LoRA, all without."""
        peft = self.is_peft
        return sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad or not peft)

    def warn_if_short_of_disk(self) -> None:
        """Warn (rank 0) when the output volume cannot hold the next checkpoint.

        Only a warning: a checkpoint of a resumed run is the previous one's size, and the user may free
        space before the first save. The save itself still fails cleanly (exit 5) if it does not fit.
        """
        if not self.args.should_save:
            return
        out = Path(self.args.output_dir)
        free, needed = ckpt.free_bytes(out), self._checkpoint_bytes()
        if free < needed:
            log.warning(
                "%s has %s free, and a checkpoint needs about %s: the next save will fail with exit code %d unless "
                "space is freed or OUTPUT_DIR moves to a larger volume",
                out, ckpt.human_bytes(free), ckpt.human_bytes(needed), errors.DISK_FULL,
            )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        if not self.is_peft:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_adapter(Path(resume_from_checkpoint), model if model is not None else self.model)

    def _load_best_model(self) -> None:
        self.finish_pending_save()  # the best checkpoint may be the one still being written
        if not self.is_peft:
            return super()._load_best_model()
        best = self.state.best_model_checkpoint
        if best:
            self._load_adapter(Path(best), self.model)

    def _load_adapter(self, checkpoint: Path, model: torch.nn.Module) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = checkpoint / ckpt.ADAPTER_DIR / "adapter_model.safetensors"
        if not adapter.is_file():
            raise FileNotFoundError(f"{checkpoint}: no LoRA adapter at {adapter}")
        result = set_peft_model_state_dict(self.accelerator.unwrap_model(model), load_file(str(adapter)))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise RuntimeError(f"{adapter}: adapter does not fit this model (unexpected keys {unexpected[:3]})")
        log.info("loaded LoRA adapter from %s", adapter)
