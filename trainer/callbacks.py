"""`MetricsCallback`: turns the trainer's logs and state into the Prometheus series of `trainer.metrics`.

The callback only sets values on the training thread; pushing happens on `trainer.metrics.Pusher`'s
thread. The run's code builds it with `MetricsCallback.from_config(cfg)`, passes it to the `Trainer`,
and calls `finish("succeeded")` or `finish("failed")` in a `finally` block: that final push is the one
Prometheus must see, whatever happened to training.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import socket
import time
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer import dist
from trainer.config import Config, MetricsArgs
from trainer.metrics import Group, JobSeries, Pusher, RankSeries, Union, gateway_handler, serve

log = logging.getLogger(__name__)

CODEBOOK_LOSS = re.compile(r"codebook_(\d+)_loss")
# log key -> JobSeries attribute, for values that are gauges as they come
LOG_GAUGES = {
    "loss": "loss",
    "audio_loss": "audio_loss",
    "text_loss": "text_loss",
    "eval_loss": "eval_loss",
    "eval_audio_loss": "eval_audio_loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "samples_per_second": "samples_per_second",
    "audio_seconds_per_second": "audio_seconds_per_second",
    "tokens_per_second": "tokens_per_second",
}


def device_memory(device: torch.device) -> tuple[float, float, float]:
    """(used, peak, total) bytes of `device`.

    On CUDA, the caching allocator's reserve: what the process holds, which is what runs out. On CPU,
    the process's resident set and the host's memory, so that CPU runs fill the same panels.
    """
    if device.type == "cuda" and torch.cuda.is_initialized():
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        return float(torch.cuda.memory_reserved(index)), float(torch.cuda.max_memory_reserved(index)), float(total)
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[1]) * page
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return float(used), float(max(peak, used)), float(os.sysconf("SC_PHYS_PAGES") * page)


class MetricsCallback(TrainerCallback):
    """Exports a run's losses, progress, throughput, checkpoints, device memory and status to Prometheus.

    Rank 0 owns the job series (losses arrive reduced over ranks); every rank owns its rank series (device
    memory, push health). With `pushgateway_url` set, a daemon thread pushes both every interval; with
    `metrics_port` set, rank 0 also serves them on /metrics. With neither, values are kept and nothing is
    sent, which costs microseconds per step.

    Args:
        args (`MetricsArgs`):
            The metrics options (`cfg.metrics`).
        run_name (`str`):
            The `job` grouping label: the PyTorchJob's name in the cluster.
        rank (`int`, *optional*, defaults to `0`):
            This process's global rank.
    """

    def __init__(self, args: MetricsArgs, run_name: str, rank: int = 0) -> None:
        self.args, self.run_name, self.rank = args, run_name, rank
        self.is_main = rank == 0
        self.job = JobSeries()
        self.ranks = RankSeries(rank, pod=socket.gethostname())
        self.job.set_status("running")
        self.job.start_time.set(time.time())
        self._device = torch.device("cpu")
        self._finished = False
        self._record_memory()
        labels = {"namespace": args.metrics_namespace} if args.metrics_namespace else {}
        self._rank_group = Group({**labels, "rank": str(rank)}, self.ranks.registry)
        self._job_group = Group(labels, self.job.registry)
        self._pusher: Pusher | None = None
        if args.pushgateway_url:
            handler = gateway_handler(
                username=args.pushgateway_username,
                password=args.pushgateway_password,
                ca_file=args.pushgateway_tls_ca_file,
                insecure_skip_verify=args.pushgateway_tls_insecure_skip_verify,
            )
            groups = [self._job_group, self._rank_group] if self.is_main else [self._rank_group]
            self._pusher = Pusher(
                args.pushgateway_url, run_name, groups, interval=args.metrics_push_interval_seconds,
                timeout=args.metrics_push_timeout_seconds, handler=handler, failures=self.ranks,
            )
            self._pusher.start()
        self._stop_server = None
        if args.metrics_port and self.is_main:
            collector = Union(self.job.registry, self.job.success, self.ranks.registry,
                              labels={"job": run_name, **labels})
            self._stop_server = serve(args.metrics_port, args.metrics_bind_address, collector)

    @classmethod
    def from_config(cls, cfg: Config, rank: int | None = None) -> MetricsCallback:
        """Build from the whole configuration: run name from `RUN_NAME` (default: output_dir's name).

        Args:
            cfg (`Config`):
                The trainer's configuration.
            rank (`int`, *optional*):
                Global rank; defaults to torchrun's `RANK`.
        """
        run_name = cfg.train.run_name or Path(cfg.train.output_dir or ".").resolve().name
        return cls(cfg.metrics, run_name, dist.rank() if rank is None else rank)

    # ---- training events --------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._device = args.device
        self._progress(state)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._progress(state)

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.job.last_progress_time.set(time.time())

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        self._record_memory()
        if not self.is_main or not logs:
            return
        job = self.job
        for key, value in logs.items():
            attribute = LOG_GAUGES.get(key)
            if attribute is not None:
                getattr(job, attribute).set(float(value))
            elif match := CODEBOOK_LOSS.fullmatch(key):
                job.codebook_loss.labels(match.group(1)).set(float(value))
        if "checkpoint_step" in logs:
            job.last_checkpoint_step.set(float(logs["checkpoint_step"]))
            job.last_checkpoint_time.set(time.time())
            job.last_checkpoint_duration.set(float(logs.get("checkpoint_seconds", 0.0)))
            job.last_checkpoint_size.set(float(logs.get("checkpoint_bytes", 0.0)))
        if "skipped_samples" in logs:
            job.skipped_samples.inc(float(logs["skipped_samples"]))

    # ---- end of the run ---------------------------------------------------------------------------
    def finish(self, status: Literal["succeeded", "failed"]) -> bool:
        """Record the run's outcome and deliver it; call once, in a `finally` block. Never raises.

        Sets the status, and on success the last-success timestamp; pushes both with retries; on success
        with `metrics_delete_on_finish`, then deletes this process's groups from the gateway; stops the
        /metrics server. Later calls do nothing.

        Args:
            status (`str`):
                `"succeeded"` or `"failed"`; anything else counts as failed.

        Returns:
            `bool`: whether the final push (and delete) reached the gateway; `True` when there is no gateway.
        """
        if self._finished:
            return True
        self._finished = True
        if status not in ("succeeded", "failed"):
            log.warning("metrics: unknown final status %r recorded as failed", status)
            status = "failed"
        ok = True
        try:
            self.job.set_status(status)
            if status == "succeeded":
                self.job.last_success_time.set(time.time())
            self._record_memory()
            if self._pusher is not None:
                job_final = Group(self._job_group.labels, Union(self.job.registry, self.job.success))
                final = [job_final, self._rank_group] if self.is_main else [self._rank_group]
                delete = self.args.metrics_delete_on_finish and status == "succeeded"
                ok = self._pusher.finish(final if status == "succeeded" else self._pusher.groups, delete=delete)
        except Exception:  # an exception here would hide the one that ended training
            log.exception("metrics: the final push failed")
            ok = False
        finally:
            if self._stop_server is not None:
                self._stop_server()
        return ok

    # ---- helpers ----------------------------------------------------------------------------------
    def _progress(self, state: TrainerState) -> None:
        job = self.job
        job.global_step.set(state.global_step)
        job.max_steps.set(state.max_steps)
        job.epoch.set(state.epoch or 0.0)
        job.last_progress_time.set(time.time())

    def _record_memory(self) -> None:
        used, peak, total = device_memory(self._device)
        self.ranks.memory_used.set(used)
        self.ranks.memory_peak.set(peak)
        self.ranks.memory_total.set(total)


__all__ = ["MetricsCallback", "device_memory"]
