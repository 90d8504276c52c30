"""`HiggsAudioTrainer`: transformers' `Trainer` with the Higgs Audio v2 loss, logging and checkpoints.

Only hooks are overridden, each calling `super()` where there is one:
- `compute_loss`: the audio loss is the sum over codebooks of each codebook's mean cross-entropy over
  its target frames, computed here from the logits. The model's own loss divides by the
  `num_items_in_batch` the Trainer counts from the *text* labels, which changes the audio loss's scale
  with the number of text labels; ours does not (`loss_is_scaled_for_ga = False`: the Trainer then
  averages micro-batches over gradient accumulation).
- `log`: adds audio, text and per-codebook losses and throughput (summed over ranks) to each log, and
  with `--nan_policy skip` the count of skipped steps (`nan_steps_skipped`).
- `_maybe_log_save_evaluate`: each logging window's running loss starts from 0, even after a NaN.
- a NaN or infinite training loss stops the run or skips the step (`trainer.divergence.NanGuard`).
- `_save` / `_save_checkpoint` / `_load_from_checkpoint`: the LoRA adapter lives in `lora_adapters/`,
  a checkpoint gets its completeness marker after every rank has written, rotation happens after that;
  a `checkpoint-N` an earlier run left at the same step is removed before any rank writes there.
  A save that fails for lack of disk space (`checkpoint.no_space`) removes its partial directory and
  stops with exit code 5 (`exitcodes.DISK_FULL`), naming the path and the space a checkpoint needs;
  `warn_if_short_of_disk` says so before the first step when the volume already has less free.
- `_save_optimizer_and_scheduler` / `finish_pending_save` / `train`: with `--async_save` a checkpoint's
  flush to stable storage, marker and rotation happen on a background thread, and with LoRA its optimizer
  and scheduler state is written there too, from a host copy (`trainer.background_save`); every way out of
  `train()` waits for that write.
- `_init_training_state`: a resumed run logs, evaluates and saves at the intervals of its own options,
  not at those stored in the checkpoint it resumes.
- `evaluate`: with evaluation disabled it runs nothing and returns `{}`.
- `_build_accelerator_args`: DDP keeps the gradients as views of its all-reduce buckets.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from trainer import checkpoint as ckpt
from trainer import dist as ranks
from trainer import exitcodes
from trainer.background_save import OPTIMIZER_FILE, SCHEDULER_FILE, PendingCheckpoint, Written, host_copy
from trainer.collator import IGNORE, Layout
from trainer.config import Config, run_name
from trainer.divergence import NanGuard
from trainer.outcome import Stopped

log = logging.getLogger(__name__)


def audio_codebook_losses(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    audio_mask: torch.Tensor,
    audio_labels: torch.Tensor,
    layout: Layout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-codebook (summed cross-entropy, target count) over the shifted audio positions.

    `logits` is (B, L, codebooks * codebook_size); audio labels (B, F, codebooks) are scattered onto the
    text positions holding audio tokens, exactly where the model places the audio embeddings.
    """
    b, seq, _ = logits.shape
    k = layout.num_codebooks
    placeholder = (input_ids == layout.audio_token_id) | (input_ids == layout.audio_delay_token_id)
    expanded = torch.full((b, seq, k), IGNORE, dtype=torch.long, device=logits.device)
    expanded[placeholder] = audio_labels[audio_mask].to(logits.device)
    shifted_logits = logits[:, :-1].reshape(b, seq - 1, k, -1)
    shifted_labels = expanded[:, 1:]
    sums, counts = [], []
    for c in range(k):
        lab = shifted_labels[:, :, c].reshape(-1)
        lg = shifted_logits[:, :, c].reshape(lab.numel(), -1).float()
        sums.append(F.cross_entropy(lg, lab, ignore_index=IGNORE, reduction="sum"))
        counts.append((lab != IGNORE).sum())
    return torch.stack(sums), torch.stack(counts)


class _Window:
    """Sums over the current logging window (reset at each log).

    The per-micro-batch sums (codebook losses, text loss, tokens, audio frames) stay on the loss's
    device, in one vector, until the log reads them: reading a GPU value on the host would stall the
    launch queue after every forward pass. Counts known on the host (steps, samples) stay there.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.reset()

    def reset(self) -> None:
        self.sums: torch.Tensor | None = None  # [codebook_0 .. codebook_{k-1}, text, tokens, audio_frames]
        self.steps = 0
        self.text_steps = 0
        self.samples = 0
        self.started = time.monotonic()

    def add(self, per_codebook: torch.Tensor, text: torch.Tensor | None, tokens: torch.Tensor,
            frames: torch.Tensor) -> None:
        zero = per_codebook.new_zeros(())
        vec = torch.cat([per_codebook.double(), torch.stack([t.double() for t in (
            text if text is not None else zero, tokens, frames)])])
        self.sums = vec if self.sums is None else self.sums + vec
        self.steps += 1
        self.text_steps += text is not None


def _written_flag(checkpoint_name: str) -> str:
    """The store flag rank 0's writing thread sets once `checkpoint_name` has ended, complete or failed."""
    return f"written/{checkpoint_name}"


class HiggsAudioTrainer(Trainer):
    """A `Trainer` for Higgs Audio v2 (see the module docstring for what each hook adds)."""

    def __init__(
        self,
        *args: Any,
        layout: Layout,
        frame_rate: float,
        text_loss_weight: float = 1.0,
        disable_eval: bool = False,
        keep_checkpoints: int = 0,
        skipped_samples: int = 0,
        group_by_length: bool = False,
        nan_policy: str = "stop",
        async_save: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Before it names the checkpoint a diverged run resumes from, the last save's background write ends.
        self.nan_guard = NanGuard(nan_policy, before_stop=self._settle_pending_save)  # type: ignore[arg-type]
        self.add_callback(self.nan_guard)
        self.layout = layout
        self.frame_rate = frame_rate
        self.text_loss_weight = text_loss_weight
        self.disable_eval = disable_eval
        self.keep_checkpoints = keep_checkpoints
        self.async_save = async_save
        self._resume_state: dict[str, Any] | None = None  # what the background write of the save under way gets
        self._pending: PendingCheckpoint | None = None  # the checkpoint being finished in the background
        self._last_background_step: int | None = None  # every rank: the last one rank 0 finished in the background
        self._skipped_samples: int | None = skipped_samples  # reported with the first training log
        self.group_by_length = group_by_length
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self.evaluation_runs = 0
        self._train = _Window(layout.num_codebooks)
        self._eval = _Window(layout.num_codebooks)

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

    # ---- loss -------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        inputs = dict(inputs)
        audio_labels = inputs.pop("audio_labels")
        labels = inputs.pop("labels", None)  # the collator leaves it out when no text position is a target
        outputs = model(**inputs, labels=labels)
        sums, counts = audio_codebook_losses(
            outputs.logits, inputs["input_ids"], inputs["audio_input_ids_mask"], audio_labels, self.layout
        )
        per_codebook = sums / counts.clamp(min=1)
        loss = per_codebook.sum()
        text_loss = outputs.loss if labels is not None else None
        if text_loss is not None:
            loss = loss + self.text_loss_weight * text_loss
        if model.training:
            self.nan_guard.observe(loss)
        window = self._train if model.training else self._eval
        with torch.no_grad():
            cb0 = audio_labels[..., 0]
            window.add(
                per_codebook.detach(),
                text_loss.detach() if text_loss is not None else None,
                inputs["attention_mask"].sum(),
                ((cb0 != IGNORE) & (cb0 != self.layout.stream_eos)).sum(),
            )
            window.samples += inputs["input_ids"].shape[0]
        return (loss, outputs) if return_outputs else loss

    # ---- batching ---------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """Length-grouped order from the samples' known lengths (no pass over the data to measure them)."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.group_by_length and self.args.per_device_train_batch_size > 1 and hasattr(dataset, "lengths"):
            from transformers.trainer_pt_utils import LengthGroupedSampler

            group = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(group, lengths=dataset.lengths())
        return super()._get_train_sampler(train_dataset)

    # ---- logging ----------------------------------------------------------------------------------
    def _reduce(self, window: _Window) -> dict[str, float]:
        """Window averages (losses) and rates (throughput), summed over ranks: one host read per log."""
        k = window.k
        sums = window.sums if window.sums is not None else torch.zeros(k + 3, dtype=torch.float64)
        counts = torch.tensor([window.steps, window.text_steps, window.samples], dtype=torch.float64)
        vec = torch.cat([sums, counts.to(sums.device)])
        if self.args.world_size > 1:
            import torch.distributed as dist

            device = self.args.device if dist.get_backend() == "nccl" else torch.device("cpu")
            vec = vec.to(device)
            dist.all_reduce(vec)
        values = vec.cpu().tolist()
        per_cb_sums, (text, tokens, frames, steps, text_steps, samples) = values[:k], values[k:]
        out: dict[str, float] = {}
        if steps:
            per_cb = [v / steps for v in per_cb_sums]
            out["audio_loss"] = float(sum(per_cb))
            for i, v in enumerate(per_cb):
                out[f"codebook_{i}_loss"] = float(v)
        if text_steps:
            out["text_loss"] = text / text_steps
        elapsed = max(time.monotonic() - window.started, 1e-9)
        out["samples_per_second"] = samples / elapsed
        out["tokens_per_second"] = tokens / elapsed
        out["audio_seconds_per_second"] = frames / self.frame_rate / elapsed
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and "eval_loss" not in logs:
            logs = {**logs, **self._reduce(self._train)}
            self._train.reset()
            if self._skipped_samples is not None:
                logs["skipped_samples"] = float(self._skipped_samples)
                self._skipped_samples = None
            logs["nan_steps_skipped"] = float(self.nan_guard.skipped)  # 0 under --nan_policy stop
        elif "eval_loss" in logs:
            extra = self._reduce(self._eval)
            logs = {**logs, **{f"eval_{k}": v for k, v in extra.items() if k.endswith("loss")}}
            self._eval.reset()
        super().log(logs, start_time)

    def _maybe_log_save_evaluate(self, tr_loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        super()._maybe_log_save_evaluate(tr_loss, *args, **kwargs)
        self.finish_pending_save(wait=False)  # a background write that has ended: logged, or its error raised
        if self._globalstep_last_logged == self.state.global_step:
            # The Trainer resets the running loss with `tr_loss -= tr_loss`, which keeps a NaN forever: after
            # a skipped NaN step (--nan_policy skip) the next logging window must start from 0.
            tr_loss.nan_to_num_(0.0, 0.0, 0.0)

    def _init_training_state(self, max_steps: int, *args: Any, **kwargs: Any) -> tuple[int, int]:
        # A resumed TrainerState brings the logging, evaluation and save intervals of the run that wrote it,
        # and Trainer keeps those (it only warns): a restart with a new SAVE_STEPS, say to save more often
        # before another preemption, would still save at the old interval. This run's options decide.
        started = super()._init_training_state(max_steps, *args, **kwargs)
        resumed = {kind: getattr(self.state, f"{kind}_steps") for kind in ("logging", "eval", "save")}
        self.state.compute_steps(self.args, max_steps)
        for kind, before in resumed.items():
            now = getattr(self.state, f"{kind}_steps")
            if now != before:
                log.info("%s_steps: %s from this run's options (the resumed checkpoint had %s)", kind, now, before)
        return started

    def _run_epoch(self, *args: Any, **kwargs: Any) -> None:
        # Resumed from a checkpoint taken at max_steps (the run died writing its final output): Trainer
        # would skip the trained batches and still take one more step before it checks the limit.
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return
        super()._run_epoch(*args, **kwargs)

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        if self.disable_eval:
            return {}
        self.evaluation_runs += 1
        self._eval.reset()
        return super().evaluate(*args, **kwargs)

    # ---- distributed ------------------------------------------------------------------------------
    def _build_accelerator_args(self, **kwargs: Any) -> dict[str, Any]:
        # DDP copies every gradient into its all-reduce buckets after backward. With the gradients as views
        # of the buckets there is no copy and no second copy of their memory: about 4% of a CPU step at one
        # process (bench/bench_trainer_overhead.py), and a gradient's worth of device memory on a GPU.
        # TrainingArguments has no field for it. Setting gradients to None (the NaN guard's skipped step,
        # zero_grad) stays correct: DDP points them at the buckets again in the next backward.
        from accelerate.utils import DistributedDataParallelKwargs

        args = super()._build_accelerator_args(**kwargs)
        for handler in args.get("kwargs_handlers", []):
            if isinstance(handler, DistributedDataParallelKwargs):
                handler.gradient_as_bucket_view = True
        return args

    # ---- checkpoints ------------------------------------------------------------------------------
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
            raise Stopped(exitcodes.DISK_FULL, full) from err
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
                raise Stopped(exitcodes.DISK_FULL, full) from err
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
                out, ckpt.human_bytes(free), ckpt.human_bytes(needed), exitcodes.DISK_FULL,
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


_HAS_MP_CONTEXT = "dataloader_multiprocessing_context" in TrainingArguments.__dataclass_fields__


def build_training_args(cfg: Config, *, use_cpu: bool, bf16: bool) -> TrainingArguments:
    """Our options -> `TrainingArguments`. Evaluation off means no strategy, no eval steps, no best model."""
    t, d = cfg.train, cfg.data
    eval_on = not t.disable_eval
    report_to = [r.strip() for r in t.report_to.split(",") if r.strip()] or ["none"]
    # Newer transformers renamed gradient checkpointing to activation checkpointing.
    ckpt_name = (
        "activation_checkpointing"
        if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
        else "gradient_checkpointing"
    )
    if use_cpu:
        ranks.start_cpu_group(t.ddp_timeout)  # on GPU, transformers starts the group with the timeout itself
    checkpointing = {}
    if cfg.model.gradient_checkpointing:
        checkpointing = {ckpt_name: True, f"{ckpt_name}_kwargs": {"use_reentrant": False}}
    return TrainingArguments(
        output_dir=t.output_dir,
        run_name=run_name(cfg),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # rotation happens after the completeness marker (see _save_checkpoint)
        eval_strategy="steps" if eval_on else "no",
        eval_steps=t.eval_steps if eval_on else None,
        load_best_model_at_end=t.load_best_model_at_end and eval_on,
        metric_for_best_model="eval_loss" if (t.load_best_model_at_end and eval_on) else None,
        greater_is_better=False if (t.load_best_model_at_end and eval_on) else None,
        seed=t.seed,
        data_seed=t.seed,
        bf16=bf16,
        use_cpu=use_cpu,
        report_to=report_to,
        **checkpointing,
        dataloader_num_workers=d.dataloader_num_workers,
        # Not persistent: a persistent worker pool draws its base seed from the global RNG once, on first use,
        # which after a resume (the first epoch runs on a separate, batch-skipping loader) falls at the next
        # epoch's start and shifts that epoch's order and dropout against an uninterrupted run.
        dataloader_persistent_workers=False,
        # Workers are spawned, not forked: forking a process that runs gloo/NCCL and OpenMP threads can
        # deadlock the child, and non-persistent workers fork again every epoch.
        **({"dataloader_multiprocessing_context": "spawn"} if d.dataloader_num_workers > 0 and _HAS_MP_CONTEXT else {}),
        remove_unused_columns=False,
        label_names=["audio_labels"],
        prediction_loss_only=True,
        ddp_find_unused_parameters=False,
        ddp_timeout=t.ddp_timeout,  # also the store's timeout, which bounds `dist.barrier`
        log_level="info" if t.log_level == "debug" else "warning",  # transformers is chatty at info
        disable_tqdm=True,
        logging_nan_inf_filter=False,  # a NaN or infinite loss must show in the logs and metrics, not be hidden
    )
