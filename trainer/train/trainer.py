"""`HiggsAudioTrainer`: transformers' `Trainer` with the Higgs Audio v2 loss, logging and NaN policy.

Only hooks are overridden; the class docstring says what each one adds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from trainer.config.values import check_warmup
from trainer.encode.collator import IGNORE, Layout
from trainer.train.losses import LossWindow, audio_codebook_losses
from trainer.train.nan_guard import NanGuard
from trainer.train.saving import CheckpointingTrainer

log = logging.getLogger(__name__)


class HiggsAudioTrainer(CheckpointingTrainer):
    """A `Trainer` for Higgs Audio v2.

    Only hooks are overridden, each calling `super()` where there is one:
    - `compute_loss`: the audio loss is the sum over codebooks of each codebook's mean cross-entropy over
      its target frames, computed here from the logits. The model's own loss divides by the
      `num_items_in_batch` the Trainer counts from the *text* labels, which changes the audio loss's scale
      with the number of text labels; ours does not (`loss_is_scaled_for_ga = False`: the Trainer then
      averages micro-batches over gradient accumulation).
    - `log`: adds audio, text and per-codebook losses and throughput (summed over ranks) to each log, the
      window's totals (`trained_samples`, `trained_tokens`, `trained_audio_seconds`, summed over ranks) and
      timings (`step_seconds`, `data_wait_seconds`: seconds of the window's optimizer steps and, of those,
      seconds waiting for the data loader, mean over ranks), and with `--nan_policy skip` the count of
      skipped steps (`nan_steps_skipped`).
    - `get_batch_samples`: times the wait for each optimizer step's batches (the data-loader wait); the
      step's time runs from there to the end of its update (`_maybe_log_save_evaluate`, before logging,
      saving or evaluating, which are not step time).
    - `_maybe_log_save_evaluate`: each logging window's running loss starts from 0, even after a NaN.
    - a NaN or infinite training loss stops the run or skips the step (`trainer.train.nan_guard.NanGuard`).
    - saving, finishing and loading checkpoints: the hooks of `trainer.train.saving.CheckpointingTrainer`.
    - `_init_training_state`: a resumed run logs, evaluates and saves at the intervals of its own options,
      not at those stored in the checkpoint it resumes.
    - `create_scheduler`: a warm-up not shorter than the run is a configuration error (`check_warmup`).
    - `evaluate`: with evaluation disabled it runs nothing and returns `{}`.
    - `_build_accelerator_args`: DDP keeps the gradients as views of its all-reduce buckets.
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
        nan_policy: str = "stop",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Before it names the checkpoint a diverged run resumes from, the last save's background write ends.
        self.nan_guard = NanGuard(nan_policy, before_stop=self._settle_pending_save)  # type: ignore[arg-type]
        self.add_callback(self.nan_guard)
        self.layout = layout
        self.frame_rate = frame_rate
        self.text_loss_weight = text_loss_weight
        self.evaluates = evaluate
        self._skipped_samples: int | None = skipped_samples  # reported with the first training log
        self.group_by_length = group_by_length
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self.evaluation_runs = 0
        self._train = LossWindow(layout.num_codebooks)
        self._eval = LossWindow(layout.num_codebooks)
        self._step_started: float | None = None

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

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        """Fetches an optimizer step's batches, timing the wait: the number that says a run is input-bound."""
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
        vec = torch.cat([sums, counts.to(sums.device)])
        if self.args.world_size > 1:
            import torch.distributed as dist

            device = self.args.device if dist.get_backend() == "nccl" else torch.device("cpu")
            vec = vec.to(device)
            dist.all_reduce(vec)
        values = vec.cpu().tolist()
        per_cb_sums, (text, tokens, frames, steps, text_steps, samples, step_s, wait_s) = values[:k], values[k:]
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
        out["trained_samples"] = samples
        out["trained_tokens"] = tokens
        out["trained_audio_seconds"] = frames / self.frame_rate
        ranks = max(self.args.world_size, 1)
        out["step_seconds"] = step_s / ranks
        out["data_wait_seconds"] = wait_s / ranks
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
        if self._step_started is not None:  # the step's update is done: what follows is not step time
            self._train.step_seconds += time.monotonic() - self._step_started
            self._step_started = None
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

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        # Here the run's length is known also when the epochs and the data set it, not --max_steps alone.
        if self.args.warmup_steps >= 1:
            source = ("--max_steps / MAX_STEPS" if self.args.max_steps > 0 else
                      f"--num_train_epochs / NUM_TRAIN_EPOCHS ({self.args.num_train_epochs:g}) over "
                      f"{len(self.train_dataset)} training samples")  # type: ignore[arg-type]
            check_warmup(int(self.args.warmup_steps), num_training_steps, source)
        return super().create_scheduler(num_training_steps, optimizer)

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        if not self.evaluates:
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
