"""`MetricsCallback`: turns the trainer's logs and state into the Prometheus series of `trainer.metrics.series`.

The callback only sets values on the training thread; pushing happens on `trainer.metrics.delivery.Pusher`'s
thread. The run's code builds it with `MetricsCallback.from_config(cfg)`, passes it to the `Trainer`,
and calls `finish(status_of(code), code)` in a `finally` block: that final push is the one
Prometheus must see, whatever happened to training.
"""

from __future__ import annotations

import logging
import math
import os
import re
import resource
import socket
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer import dist, errors
from trainer.config.options import Config, MetricsArgs
from trainer.config.values import run_name
from trainer.metrics.delivery import Group, Pusher, gateway_handler, serve
from trainer.metrics.series import SUCCESS_GROUP, JobSeries, RankSeries, Union

log = logging.getLogger(__name__)

CODEBOOK_LOSS = re.compile(r"codebook_(\d+)_loss")
# log keys that are job gauges of the same name, as they come
LOG_GAUGES = frozenset((
    "loss", "audio_loss", "text_loss", "eval_loss", "eval_audio_loss", "learning_rate", "grad_norm",
    "samples_per_second", "audio_seconds_per_second", "tokens_per_second", "nan_steps_skipped",
))
# log keys whose values (the logging window's totals) are added to the job counter of the same name
LOG_COUNTERS = ("trained_samples", "trained_tokens", "trained_audio_seconds", "step_seconds", "data_wait_seconds")
# job gauges read from the TrainerState when collected
STATE_GAUGES = {"global_step": "global_step", "max_steps": "max_steps", "epoch": "epoch"}


def device_memory(device: torch.device) -> tuple[float, float, float]:
    """(used, peak, total) bytes of `device`.

    On CUDA, the caching allocator's reserve: what the process holds, which is what runs out. On CPU,
    the process's resident set and the host's memory, so that CPU runs fill the same panels.
    """
    if device.type == "cuda" and torch.cuda.is_initialized():
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        used, peak = torch.cuda.memory_reserved(index), torch.cuda.max_memory_reserved(index)
        return float(used), float(peak), float(total)
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[1]) * page
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return float(used), float(max(peak, used)), float(os.sysconf("SC_PHYS_PAGES") * page)


Status = Literal["succeeded", "failed", "stopped"]


def status_of(exit_code: int) -> Status:
    """The final `run_status` of an attempt that ends with `exit_code`.

    A signal (SIGTERM from a preemption or `kubectl delete`, SIGINT) stops the run after a checkpoint and a
    restart resumes it: "stopped", which the run-failed alert leaves alone. Every other non-zero code is
    "failed", the retried lost-peer code too: a process died, and somebody should know why.
    """
    if exit_code == errors.OK:
        return "succeeded"
    if exit_code in (errors.INTERRUPTED, errors.PREEMPTED):
        return "stopped"
    return "failed"


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
        self._device = torch.device("cpu")
        self.job = JobSeries()
        self.ranks = RankSeries(rank, pod=socket.gethostname(), memory=lambda: device_memory(self._device))
        self.job.set_status("running")
        self.job.set("start_time_seconds", time.time())
        # each step only stores these two; the gauges read them when collected (see GaugeSet)
        self._state: TrainerState | None = None
        self._progress_time: float | None = None
        for gauge, attribute in STATE_GAUGES.items():
            self.job.gauges.set_function(gauge, lambda a=attribute: self._from_state(a))
        self.job.gauges.set_function("last_progress_time_seconds", lambda: self._progress_time)
        self._nan_steps_skipped = 0.0  # the trainer logs a running count; the counter takes its rises
        self._finished = False
        labels = {"namespace": args.metrics_namespace} if args.metrics_namespace else {}
        self._rank_group = Group({**labels, "rank": str(rank)}, self.ranks.registry)
        self._job_group = Group(labels, self.job.registry)
        self._success_group = Group({**labels, **SUCCESS_GROUP}, self.job.success, replace=False)
        self._pusher = self._start_pusher() if args.pushgateway_url else None
        self._stop_server = self._start_server(labels) if args.metrics_port and self.is_main else None

    @classmethod
    def from_config(cls, cfg: Config, rank: int | None = None) -> MetricsCallback:
        """Build from the whole configuration: run name from `RUN_NAME` (default: output_dir's name).

        Args:
            cfg (`Config`):
                The trainer's configuration.
            rank (`int`, *optional*):
                Global rank; defaults to torchrun's `RANK`.
        """
        return cls(cfg.metrics, run_name(cfg), dist.rank() if rank is None else rank)

    # ---- training events --------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Note the device and the state, which the pusher's thread reads from now on."""
        device = args.device
        if device.type == "cuda" and device.index is None:  # other threads read it: make it explicit
            device = torch.device("cuda", torch.cuda.current_device())
        self._device = device
        self._state, self._progress_time = state, time.time()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Note the progress time (the stall alert reads it) and count the optimizer step."""
        self._state, self._progress_time = state, time.time()
        if self.is_main:
            self.job.counters["optimizer_steps"].inc()

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Evaluation is progress too: the stall alert must not fire during a long evaluation."""
        self._progress_time = time.time()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Export the logged figures (loss, learning rate, per-codebook loss, checkpoints) as gauges."""
        if not self.is_main or not logs:
            return
        job = self.job
        for key, value in logs.items():
            if key in LOG_GAUGES:
                job.set(key, value)
            elif key.startswith("codebook_") and (match := CODEBOOK_LOSS.fullmatch(key)):
                job.set("codebook_loss", value, match.group(1))
        if "checkpoint_step" in logs:
            job.set("last_checkpoint_step", logs["checkpoint_step"])
            job.set("last_checkpoint_time_seconds", time.time())
            job.set("last_checkpoint_duration_seconds", logs.get("checkpoint_seconds", 0.0))
            job.set("last_checkpoint_blocking_seconds",
                    logs.get("checkpoint_blocking_seconds", logs.get("checkpoint_seconds", 0.0)))
            job.set("last_checkpoint_size_bytes", logs.get("checkpoint_bytes", 0.0))
        if "skipped_samples" in logs:
            job.skipped_samples.inc(float(logs["skipped_samples"]))
        for key in LOG_COUNTERS:
            if (value := logs.get(key)) is not None and math.isfinite(value) and value > 0:
                job.counters[key].inc(value)
        if (skipped := logs.get("nan_steps_skipped")) is not None and skipped > self._nan_steps_skipped:
            job.counters["nan_steps_skipped"].inc(skipped - self._nan_steps_skipped)
            self._nan_steps_skipped = skipped
        self._on_samples(logs)

    def _on_samples(self, logs: dict[str, float]) -> None:
        """The sample set's scores (trainer.generate.sampler), and the best so far for the regression alert."""
        job = self.job
        for key in ("sample_wer", "sample_cer", "sample_speaker_similarity", "sample_step"):
            if key in logs:
                job.set(key, logs[key])
        if "sample_wer" in logs:
            self._best_wer = min(logs["sample_wer"], getattr(self, "_best_wer", float("inf")))
            job.set("sample_best_wer", self._best_wer)
        if "sample_speaker_similarity" in logs:
            self._best_sim = max(logs["sample_speaker_similarity"], getattr(self, "_best_sim", -float("inf")))
            job.set("sample_best_speaker_similarity", self._best_sim)
        if "generated_clips" in logs:
            job.generated_clips.inc(float(logs["generated_clips"]))
        if "sample_failures" in logs:
            job.sample_failures.inc(float(logs["sample_failures"]))

    # ---- end of the run ---------------------------------------------------------------------------
    def finish(self, status: Status, exit_code: int | None = None) -> bool:
        """Record the run's outcome and deliver it; call once, in a `finally` block. Never raises.

        Sets the status (and `exit_code` when given), and on success the last-success timestamp; pushes
        them with retries (the timestamp to its own group); on success with `metrics_delete_on_finish`,
        then deletes this process's job and rank groups from the gateway, keeping the last-success group;
        stops the /metrics server. Later calls do nothing.

        Args:
            status (`str`):
                `"succeeded"`, `"failed"` or `"stopped"` (see `status_of`); anything else counts as failed.
            exit_code (`int`, *optional*):
                The process's exit code (`trainer.errors`), exported as `higgs_trainer_exit_code`.

        Returns:
            `bool`: whether the final push (and delete) reached the gateway; `True` when there is no gateway.
        """
        if self._finished:
            return True
        self._finished = True
        if status not in ("succeeded", "failed", "stopped"):
            log.warning("metrics: unknown final status %r recorded as failed", status)
            status = "failed"
        ok = True
        try:
            self.job.set_status(status)
            if exit_code is not None:
                self.job.set("exit_code", exit_code)
            if status == "succeeded":
                self.job.set_success_time(time.time())
            if self._pusher is not None:
                groups = list(self._pusher.groups)
                if status == "succeeded" and self.is_main:
                    groups.append(self._success_group)
                delete = self.args.metrics_delete_on_finish and status == "succeeded"
                ok = self._pusher.finish(groups, delete=delete)
        except Exception:  # an exception here would hide the one that ended training
            log.exception("metrics: the final push failed")
            ok = False
        finally:
            if self._stop_server is not None:
                self._stop_server()
        return ok

    # ---- helpers ----------------------------------------------------------------------------------
    def _start_pusher(self) -> Pusher:
        args = self.args
        handler = gateway_handler(
            username=args.pushgateway_username,
            password=args.pushgateway_password,
            ca_file=args.pushgateway_tls_ca_file,
            insecure_skip_verify=args.pushgateway_tls_insecure_skip_verify,
        )
        groups = [self._job_group, self._rank_group] if self.is_main else [self._rank_group]
        pusher = Pusher(
            args.pushgateway_url or "", self.run_name, groups, interval=args.metrics_push_interval_seconds,
            timeout=args.metrics_push_timeout_seconds, handler=handler, failures=self.ranks,
        )
        pusher.start()
        return pusher

    def _start_server(self, labels: dict[str, str]) -> Callable[[], None] | None:
        success = Union(self.job.success, labels=SUCCESS_GROUP)  # labelled as the gateway labels it
        collector = Union(self.job.registry, success, self.ranks.registry,
                          labels={"job": self.run_name, **labels})
        address, port = self.args.metrics_bind_address, self.args.metrics_port
        try:
            return serve(port, address, collector)
        except OSError as exc:  # a taken port must not stop the training
            log.warning("metrics: cannot serve /metrics on %s:%d (%s); training goes on without it",
                        address, port, exc)
            return None

    def _from_state(self, attribute: str) -> float | None:
        state = self._state
        return None if state is None else float(getattr(state, attribute) or 0)


__all__ = ["MetricsCallback", "device_memory", "status_of"]
