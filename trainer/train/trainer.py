"""`HiggsAudioTrainer`: transformers' `Trainer` with the Higgs Audio v2 loss, logging, NaN policy and checkpoints.

It extends the Trainer through its public methods and callbacks; the three private methods it still
overrides are listed, with their reasons, in `PRIVATE_OVERRIDES` (checked against the installed transformers
by tests/trainer/train/test_private_surface.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer import dist as ranks
from trainer.config.values import check_warmup, label
from trainer.encode.collator import IGNORE, Layout
from trainer.train import checkpoint as ckpt
from trainer.train import fsdp
from trainer.train.agreement import StepAgreement
from trainer.train.background_save import OPTIMIZER_FILE, SCHEDULER_FILE, host_copy
from trainer.train.losses import LossWindow, audio_codebook_losses
from trainer.train.nan_guard import NanGuard
from trainer.train.saving import CheckpointWriter
from trainer.train.token_batches import TokenBudgetBatchSampler, token_budget_loader

log = logging.getLogger(__name__)

# The Trainer's private methods overridden here, each for want of a public hook that does its job.
PRIVATE_OVERRIDES = {
    "_save_optimizer_and_scheduler": "with --async_save and LoRA the optimizer state goes to the background writer",
    "_get_train_sampler": "length-grouped order from the samples' known lengths, without a pass over the data",
    "_load_from_checkpoint": "a resumed LoRA run loads its adapter from lora_adapters/, not the checkpoint's root",
}


class RunHooks(TrainerCallback):
    """What the trainer does at the Trainer's events: a resumed run's intervals, its max-steps guard, step time."""

    def __init__(self, trainer: HiggsAudioTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        """This run's intervals over a resumed state's, and no extra step past `max_steps` on a resume."""
        # A resumed TrainerState brings the logging, evaluation and save intervals of the run that wrote it,
        # and Trainer keeps those (it only warns): a restart with a new SAVE_STEPS, say to save more often
        # before another preemption, would still save at the old interval. This run's options decide.
        resumed = {kind: getattr(state, f"{kind}_steps") for kind in ("logging", "eval", "save")}
        state.compute_steps(args, state.max_steps)
        for kind, before in resumed.items():
            now = getattr(state, f"{kind}_steps")
            if now != before:
                log.info("%s_steps: %s from this run's options (the resumed checkpoint had %s)", kind, now, before)
        # Resumed from a checkpoint taken at max_steps (the run died writing its final output): Trainer would
        # skip the trained batches and still take one more step before it checks the limit.
        # `HiggsAudioTrainer.get_batch_samples` fetches nothing once training is to stop.
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            control.should_training_stop = True

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        """End the step's timer: logging, saving and evaluating are not step time."""
        self.trainer.end_step_timer()


class HiggsAudioTrainer(Trainer):
    """A `Trainer` for Higgs Audio v2.

    Public methods overridden, each calling `super()`:
    - `compute_loss`: the audio loss is the sum over codebooks of each codebook's mean cross-entropy over
      its target frames, computed here from the logits. The model's own loss divides by the
      `num_items_in_batch` the Trainer counts from the *text* labels, which changes the audio loss's scale
      with the number of text labels; ours does not (`loss_is_scaled_for_ga = False`: the Trainer then
      averages micro-batches over gradient accumulation).
    - `training_step`: with `--nan_policy skip` a non-finite loss is kept out of the Trainer's running sum
      (which only ever subtracts itself to reset, so a NaN would stay in every later window) and added back
      to the logged `loss` of its own window, which shows it.
    - `log`: adds audio, text and per-codebook losses and throughput (summed over ranks) to each log, the
      window's totals (`trained_samples`, `trained_tokens`, `trained_audio_seconds`, summed over ranks) and
      timings (`step_seconds`, `data_wait_seconds`: seconds of the window's optimizer steps and, of those,
      seconds waiting for the data loader, mean over ranks), and with `--nan_policy skip` the count of
      skipped steps (`nan_steps_skipped`).
    - `get_batch_samples`: times the wait for each optimizer step's batches (the data-loader wait); the
      step's time runs from there to `on_step_end`, before logging, saving or evaluating. Once training is
      to stop before a step (`RunHooks.on_train_begin`), it fetches nothing, so no step is taken.
    - `get_train_dataloader`, `get_resumed_dataloader`: with `--max_tokens_per_batch`, micro-batches up to a
      token budget, the same count on every rank; a resumed run's sampler skips the trained ones itself.
    - `create_scheduler`: a warm-up not shorter than the run is a configuration error (`check_warmup`).
    - `evaluate`: with evaluation disabled it runs nothing and returns `{}`.
    - `save_model`: the LoRA adapter of a checkpoint goes to `lora_adapters/`.
    - `train`: the checkpoint writer is the last callback; every way out waits for the last background write.
    - `create_accelerator_and_postprocess`: DDP keeps the gradients as views of its all-reduce buckets.

    Callbacks it owns: `CheckpointWriter` (`self.checkpoints`), `StepAgreement` (one collective per step for
    every per-step flag), `NanGuard` (`--nan_policy`), `RunHooks`.
    """

    def __init__(
        self,
        *args: Any,
        layout: Layout,
        frame_rate: float,
        text_loss_weight: float = 1.0,
        evaluate: bool = True,
        skipped_samples: int = 0,
        group_by_length: bool = False,
        max_tokens_per_batch: int = 0,
        nan_policy: str = "stop",
        keep_checkpoints: int = 0,
        async_save: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.checkpoints = CheckpointWriter(self, keep_checkpoints, async_save)
        # The Trainer's own reload of the best model looks for a LoRA adapter in the checkpoint's root, where
        # ours is not: the writer reloads it at the end of training instead.
        self.reload_best_adapter = bool(self.args.load_best_model_at_end and self.checkpoints.peft_model is not None)
        if self.reload_best_adapter:
            self.args.load_best_model_at_end = False
        self.add_callback(StepAgreement(lambda: self.callback_handler.callbacks))
        # Before it names the checkpoint a diverged run resumes from, the last save's background write ends.
        self.nan_guard = NanGuard(nan_policy, before_stop=self.checkpoints.settle)  # type: ignore[arg-type]
        self.add_callback(self.nan_guard)
        self.add_callback(RunHooks(self))
        self.add_callback(self.checkpoints)
        self.layout = layout
        self.frame_rate = frame_rate
        self.text_loss_weight = text_loss_weight
        self.evaluates = evaluate
        self._skipped_samples: int | None = skipped_samples  # reported with the first training log
        self.group_by_length = group_by_length
        self.max_tokens_per_batch = max_tokens_per_batch
        self.token_batches: TokenBudgetBatchSampler | None = None  # with a budget, once the loader is built
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self.evaluation_runs = 0
        self._train = LossWindow(layout.num_codebooks)
        self._eval = LossWindow(layout.num_codebooks)
        self._step_started: float | None = None
        self._nonfinite: torch.Tensor | None = None  # --nan_policy skip: this window's non-finite losses, summed

    # ---- loss -------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """Sum of the per-codebook audio losses, plus the weighted text loss when text is a target."""
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

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """Under `--nan_policy skip`, a non-finite loss counts as zero and is kept aside for the log."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.nan_guard.policy != "skip":
            return loss
        finite = torch.isfinite(loss)  # on the device: no host sync per micro-batch
        bad = torch.where(finite, torch.zeros_like(loss), loss)
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite + bad
        return torch.where(finite, loss, torch.zeros_like(loss))

    # ---- batching ---------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """Length-grouped order from the samples' known lengths (no pass over the data to measure them)."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.group_by_length and self.args.per_device_train_batch_size > 1 and hasattr(dataset, "lengths"):
            from trainer.encode.length_groups import LengthGroupedOrder

            group = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedOrder(group, dataset.lengths())
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self) -> Any:
        """With `--max_tokens_per_batch`, micro-batches up to a token budget (trainer/train/token_batches.py).

        `per_device_train_batch_size` and `group_by_length` do not apply then.
        """
        if not self.max_tokens_per_batch or self.train_dataset is None:
            return super().get_train_dataloader()
        loader, self.token_batches = token_budget_loader(
            self.train_dataset, self.data_collator, self.args, self.accelerator, self.max_tokens_per_batch)
        return loader

    def get_resumed_dataloader(self, dataloader: Any, num_batches: int) -> Any:
        """A resumed run's loader: with a token budget the sampler skips the trained micro-batches itself.

        accelerate's `skip_first_batches` would wrap the sampler where the Trainer's `set_epoch` no longer
        reaches it (with more than one rank), and a resumed later epoch would replay the first one's order.
        """
        if self.token_batches is None:
            return super().get_resumed_dataloader(dataloader, num_batches)
        self.token_batches.skip(num_batches)
        return dataloader

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        """Fetches an optimizer step's batches, timing the wait: the number that says a run is input-bound."""
        if self.control.should_training_stop:  # decided before this step (RunHooks.on_train_begin): take none
            return [], None
        started = time.monotonic()
        batches = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._step_started = started
        self._train.data_wait_seconds += time.monotonic() - started
        return batches

    # ---- logging ----------------------------------------------------------------------------------
    def _reduce(self, window: LossWindow) -> dict[str, float]:
        """Window averages (losses) and rates (throughput), summed over ranks: one host read per log."""
        k = window.k
        sums = window.sums if window.sums is not None else torch.zeros(k + 3, dtype=torch.float64)
        counts = torch.tensor([window.steps, window.text_steps, window.samples, window.step_seconds,
                               window.data_wait_seconds], dtype=torch.float64)
        parts = [sums, counts.to(sums.device)]
        if window is self._train and self._nonfinite is not None:  # only under --nan_policy skip
            parts.append(self._nonfinite.detach().to(sums.device, torch.float64).reshape(1))
            self._nonfinite = None
        values = ranks.sum_over_ranks(torch.cat(parts)).tolist()
        out: dict[str, float] = {}
        if len(values) > k + 8:
            out["nonfinite_loss"] = values.pop()
        per_cb_sums, (text, tokens, frames, steps, text_steps, samples, step_s, wait_s) = values[:k], values[k:]
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
        out["trained_samples"] = samples
        out["trained_tokens"] = tokens
        out["trained_audio_seconds"] = frames / self.frame_rate
        world = max(self.args.world_size, 1)
        out["step_seconds"] = step_s / world
        out["data_wait_seconds"] = wait_s / world
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the window's figures (per-codebook losses, throughput, skipped steps) to the Trainer's log."""
        if "loss" in logs and "eval_loss" not in logs:
            extra = self._reduce(self._train)
            if "nonfinite_loss" in extra:  # a skipped step's NaN shows in its own window's loss, on every rank
                logs = {**logs, "loss": logs["loss"] + extra.pop("nonfinite_loss")}
            logs = {**logs, **extra}
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

    def end_step_timer(self) -> None:
        """The step's update is done (`on_step_end`): what follows, logging, saving, evaluating, is not step time."""
        if self._step_started is not None:
            self._train.step_seconds += time.monotonic() - self._step_started
            self._step_started = None

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        """Refuse a warm-up not shorter than the run, once the run's length is known."""
        # Here the run's length is known also when the epochs and the data set it, not --max_steps alone.
        if self.args.warmup_steps >= 1:
            source = (label("max_steps") if self.args.max_steps > 0 else
                      f"{label('num_train_epochs')} ({self.args.num_train_epochs:g}) over "
                      f"{len(self.train_dataset)} training samples")  # type: ignore[arg-type]
            check_warmup(int(self.args.warmup_steps), num_training_steps, source)
        return super().create_scheduler(num_training_steps, optimizer)

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Evaluate, unless evaluation is off; nothing is computed then."""
        if not self.evaluates:
            return {}
        self.evaluation_runs += 1
        self._eval.reset()
        return super().evaluate(*args, **kwargs)

    # ---- checkpoints --------------------------------------------------------------------------------
    @property
    def is_peft(self) -> bool:
        """Whether the model trains a LoRA adapter."""
        return self.checkpoints.peft_model is not None

    @property
    def saves_in_background(self) -> bool:
        """Whether a checkpoint is finished on a background thread of rank 0 (`CheckpointWriter.in_background`)."""
        return self.checkpoints.in_background

    def finish_pending_save(self, *, wait: bool = True) -> None:
        """`CheckpointWriter.finish`: end (with `wait=False`, only deal with an ended) background write."""
        self.checkpoints.finish(wait=wait)

    def warn_if_short_of_disk(self) -> None:
        """Warn when the output volume cannot hold another checkpoint (`CheckpointWriter`)."""
        self.checkpoints.warn_if_short_of_disk()

    def saved_weight_bytes(self) -> int:
        """Bytes of the weights a checkpoint saves (`CheckpointWriter`)."""
        return self.checkpoints.saved_weight_bytes()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """With LoRA, save only the adapter (under `lora_adapters/`), not the frozen base model."""
        peft = self.checkpoints.peft_model
        if self.is_fsdp_enabled:
            return fsdp.save_gathered(self, Path(output_dir if output_dir is not None else self.args.output_dir),
                                      peft)
        if peft is None or self.is_deepspeed_enabled:
            return super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            out = Path(output_dir if output_dir is not None else self.args.output_dir)
            peft.save_pretrained(str(out / ckpt.ADAPTER_DIR), safe_serialization=True)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not (self.saves_in_background and self.is_peft and self.args.should_save):
            # Full fine-tuning writes it here: a host copy would be the model's size twice over.
            return super()._save_optimizer_and_scheduler(output_dir)
        # The optimizer's live tensors: the background thread copies them, and the next optimizer step waits for
        # that copy (PendingCheckpoint's guard). The scheduler's few numbers are copied here.
        self.checkpoints.resume_state = {
            OPTIMIZER_FILE: self.optimizer.state_dict(),
            SCHEDULER_FILE: host_copy(self.lr_scheduler.state_dict()),
        }

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        if not self.is_peft:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self.checkpoints.load_adapter(Path(resume_from_checkpoint), model if model is not None else self.model)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Train, and whatever ends training, let the last checkpoint's background write end first."""
        # Last, so that every other callback has asked for a save (or not) before the writer makes way for it.
        self.pop_callback(self.checkpoints)
        self.add_callback(self.checkpoints)
        # Whatever ends training, the last checkpoint's background write ends first: a run that stops (a
        # signal, a diverged loss, a lost peer) leaves that checkpoint complete, and the first error stands.
        try:
            result = super().train(*args, **kwargs)
        except BaseException as err:
            answer = self.checkpoints.failed(err)
            self.checkpoints.settle()
            if answer is err:
                raise
            raise answer from err
        self.checkpoints.finish()
        if self.saves_in_background:
            # Only rank 0 waited above. The others must not leave before it: a rank that exits (a signal stop
            # exits with 143) makes torchrun stop the rest, and rank 0 would be killed mid-write. A normal end
            # is a point every rank reaches; an exception above may not be, so no barrier there.
            self.accelerator.wait_for_everyone()
        return result

    # ---- distributed ------------------------------------------------------------------------------
    def create_accelerator_and_postprocess(self) -> None:
        """DDP with gradients as views of its buckets: no copy of every gradient after backward."""
        # DDP copies every gradient into its all-reduce buckets after backward. With the gradients as views
        # of the buckets there is no copy and no second copy of their memory: about 4% of a CPU step at one
        # process (bench/bench_trainer_overhead.py), and a gradient's worth of device memory on a GPU.
        # TrainingArguments has no field for it. Setting gradients to None (the NaN guard's skipped step,
        # zero_grad) stays correct: DDP points them at the buckets again in the next backward.
        from accelerate.utils import DistributedDataParallelKwargs

        super().create_accelerator_and_postprocess()
        fsdp.enable_on_cpu(self)
        if self.accelerator.ddp_handler is None:
            self.accelerator.ddp_handler = DistributedDataParallelKwargs()
        self.accelerator.ddp_handler.gradient_as_bucket_view = True
