"""A tiny real `transformers.Trainer` run that logs what the Higgs trainer logs, for the metrics tests.

The model is a linear layer that predicts `codebooks` labels, so a run takes a second on a CPU; the
`Trainer` subclass adds the keys of trainer/train/trainer.py's log contract (audio, text and per-codebook
losses, throughput, checkpoint timings, skipped samples). Under torchrun it runs as a script:

    torchrun --nproc_per_node=2 --master_addr=127.0.0.1 --master_port=PORT tests/monitoring/tiny_run.py \
        --output_dir OUT --run_name RUN --pushgateway_url URL [--metrics_namespace NS]

With `--crash_after_training` (plain python, one process) it exits like a killed pod: no `finish`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from trainer import errors
from trainer.metrics.callback import status_of

CODEBOOK_SIZE = 4
FEATURES = 8


class TinyModel(nn.Module):
    """Predicts one label per codebook; the loss becomes NaN from training forward `nan_from_call` on."""

    def __init__(self, codebooks: int, nan_from_call: int | None = None) -> None:
        super().__init__()
        self.codebooks, self.nan_from_call, self.calls = codebooks, nan_from_call, 0
        self.net = nn.Linear(FEATURES, codebooks * CODEBOOK_SIZE)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x).view(x.shape[0], self.codebooks, CODEBOOK_SIZE)
        per_codebook = torch.stack(
            [F.cross_entropy(logits[:, k], labels[:, k]) for k in range(self.codebooks)]
        )
        loss = per_codebook.sum()
        if self.training:
            self.calls += 1
            if self.nan_from_call is not None and self.calls >= self.nan_from_call:
                loss = loss * float("nan")
        return {"loss": loss, "codebook_losses": per_codebook.detach()}


class ContractTrainer(Trainer):
    """Adds the Higgs trainer's extra log keys (trainer/train/trainer.py) to the stock `Trainer` logs."""

    def __init__(self, *args: Any, step_seconds: float = 0.0, skip_from_step: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_seconds = step_seconds
        self.skip_from_step = skip_from_step  # from then on every step counts as skipped for a NaN loss
        self._window: dict[str, Any] = {}
        self._reset()

    def _reset(self) -> None:
        self._window = {"codebook": None, "steps": 0, "samples": 0, "started": time.monotonic(), "wait": 0.0}

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        started = time.monotonic()
        batches = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._window["wait"] += time.monotonic() - started
        return batches

    def compute_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        outputs = model(**inputs)
        if model.training:
            time.sleep(self.step_seconds)
            w = self._window
            w["codebook"] = outputs["codebook_losses"] + (0 if w["codebook"] is None else w["codebook"])
            w["steps"] += 1
            w["samples"] += inputs["x"].shape[0]
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        w = self._window
        if "loss" in logs and "eval_loss" not in logs and w["steps"]:
            per_codebook = (w["codebook"] / w["steps"]).tolist()
            elapsed = max(time.monotonic() - w["started"], 1e-9)
            logs = {
                **logs,
                "audio_loss": float(sum(per_codebook)),
                "text_loss": 0.5 * float(sum(per_codebook)),
                **{f"codebook_{i}_loss": v for i, v in enumerate(per_codebook)},
                "samples_per_second": w["samples"] / elapsed,
                "tokens_per_second": 10 * w["samples"] / elapsed,
                "audio_seconds_per_second": 2.5 * w["samples"] / elapsed,
                "trained_samples": float(w["samples"]),
                "trained_tokens": 10.0 * w["samples"],
                "trained_audio_seconds": 2.5 * w["samples"],
                "step_seconds": elapsed,
                "data_wait_seconds": w["wait"],
                "nan_steps_skipped": float(max(0, self.state.global_step - self.skip_from_step + 1)
                                           if self.skip_from_step is not None else 0),
            }
            self._reset()
        elif "eval_loss" in logs:
            logs = {**logs, "eval_audio_loss": logs["eval_loss"]}
        super().log(logs, start_time)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        started = time.monotonic()
        super()._save_checkpoint(model, trial)
        path = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        self.log({"checkpoint_step": float(self.state.global_step),
                  "checkpoint_seconds": time.monotonic() - started, "checkpoint_bytes": float(size)})


def dataset(n: int, codebooks: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(FEATURES, generator=g), "labels": torch.randint(0, CODEBOOK_SIZE, (codebooks,),
                                                                             generator=g)} for _ in range(n)]


class FailAtStep(TrainerCallback):
    """Raises at the end of optimizer step `step`, like a crash in the middle of a run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise RuntimeError(f"injected failure at step {self.step}")


def train(
    output_dir: Path,
    callbacks: list[TrainerCallback],
    *,
    max_steps: int = 6,
    codebooks: int = 2,
    nan_from_call: int | None = None,
    fail_at_step: int | None = None,
    step_seconds: float = 0.0,
    skipped_samples: int = 2,
    skip_from_step: int | None = None,
) -> ContractTrainer:
    """Train the tiny model for `max_steps` steps with `callbacks`; evaluates and checkpoints on the way."""
    torch.manual_seed(0)
    if fail_at_step is not None:
        callbacks = [*callbacks, FailAtStep(fail_at_step)]
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=4,
        per_device_eval_batch_size=4, learning_rate=0.1, logging_steps=1, save_steps=max(max_steps // 2, 1),
        eval_strategy="steps", eval_steps=max(max_steps // 2, 1), report_to="none", use_cpu=True,
        disable_tqdm=True, seed=0, logging_nan_inf_filter=False, remove_unused_columns=False,
        dataloader_num_workers=0, save_only_model=True, label_names=["labels"],
    )
    trainer = ContractTrainer(
        model=TinyModel(codebooks, nan_from_call), args=args, train_dataset=dataset(64, codebooks),
        eval_dataset=dataset(8, codebooks, seed=1), callbacks=callbacks, step_seconds=step_seconds,
        skip_from_step=skip_from_step,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.log({"skipped_samples": float(skipped_samples)})
    trainer.train()
    return trainer


def train_and_finish(output_dir: Path, callback: Any, **kwargs: Any) -> ContractTrainer:
    """What the run's code does: train, then `finish` with the outcome, whatever happened."""
    code = errors.FAILURE
    try:
        trainer = train(output_dir, [callback], **kwargs)
        code = errors.OK
        return trainer
    finally:
        callback.finish(status_of(code), code)


def main(argv: list[str] | None = None) -> None:
    """torchrun entry: one rank of a tiny run that reports through `MetricsCallback.from_config`."""
    from trainer.config.options import Config, MetricsArgs, TrainArgs
    from trainer.metrics.callback import MetricsCallback

    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--run_name", required=True)
    parser.add_argument("--pushgateway_url", required=True)
    parser.add_argument("--metrics_namespace")
    parser.add_argument("--max_steps", type=int, default=8)
    parser.add_argument("--step_seconds", type=float, default=0.2)
    parser.add_argument("--crash_after_training", action="store_true",
                        help="exit like a killed pod: after training, without finish()")
    a = parser.parse_args(argv)
    cfg = Config(
        train=TrainArgs(output_dir=a.output_dir, run_name=a.run_name),
        metrics=MetricsArgs(pushgateway_url=a.pushgateway_url, metrics_namespace=a.metrics_namespace,
                            metrics_push_interval_seconds=0.25, metrics_push_timeout_seconds=2.0),
    )
    callback = MetricsCallback.from_config(cfg)
    code = errors.FAILURE
    try:
        train(Path(a.output_dir), [callback], max_steps=a.max_steps, step_seconds=a.step_seconds)
        if a.crash_after_training:
            time.sleep(1.0)  # a few periodic pushes carry the last steps out
            os._exit(3)
        code = errors.OK
    finally:
        callback.finish(status_of(code), code)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
