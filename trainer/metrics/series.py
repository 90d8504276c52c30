"""The Prometheus series of a training run (their delivery is `trainer.metrics.delivery`).

A training run is a batch job: its series are pushed to a Pushgateway (grouping key `job=<run name>`, plus
`namespace` when known) because a scrape can miss the end of a short run and the final status has to
outlive the pod. The training thread only sets values here, which costs microseconds; collection happens
on the pusher's or the /metrics server's thread. `JobSeries` says which registries are pushed to which group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

NAMESPACE = "higgs_trainer"
# "stopped": ended by SIGTERM or SIGINT after saving a checkpoint; a restart resumes (retried exit codes)
STATUSES = ("running", "succeeded", "failed", "stopped")
# the grouping labels, besides job and namespace, of the group that keeps the last-success timestamp
SUCCESS_GROUP = {"outcome": "succeeded"}

JOB_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "run_status": ("1 for the run's current status, 0 for the others.", ("status",)),
    "start_time_seconds": ("Unix time at which this attempt of the run started.", ()),
    "global_step": ("Optimizer steps done.", ()),
    "max_steps": ("Optimizer steps the run will do in all.", ()),
    "epoch": ("Epochs done, fractional.", ()),
    "last_progress_time_seconds": ("Unix time at which the last training or evaluation step ended.", ()),
    "loss": ("Training loss (audio plus weighted text), mean over the logging window.", ()),
    "audio_loss": ("Audio loss: sum of the per-codebook cross-entropies.", ()),
    "text_loss": ("Text-head cross-entropy (runs with the text head only).", ()),
    "codebook_loss": ("Cross-entropy of one audio codebook.", ("codebook",)),
    "eval_loss": ("Loss on the evaluation set at the last evaluation.", ()),
    "eval_audio_loss": ("Audio loss on the evaluation set at the last evaluation.", ()),
    "learning_rate": ("Learning rate of the last logged step.", ()),
    "grad_norm": ("Gradient norm before clipping, at the last logged step.", ()),
    "samples_per_second": ("Training samples per second, all ranks.", ()),
    "audio_seconds_per_second": ("Seconds of target audio trained per second of wall time, all ranks.", ()),
    "tokens_per_second": ("Input tokens per second, all ranks.", ()),
    "last_checkpoint_step": ("Step of the last complete checkpoint.", ()),
    "last_checkpoint_time_seconds": ("Unix time at which the last complete checkpoint was written.", ()),
    "last_checkpoint_duration_seconds": ("Seconds from the start of the last checkpoint's save until it was complete.",
                                         ()),
    "last_checkpoint_blocking_seconds": ("Of those, the seconds training waited for the save.", ()),
    "last_checkpoint_size_bytes": ("Size of the last checkpoint on disk.", ()),
    "nan_steps_skipped": ("Optimizer steps this attempt skipped for a NaN or infinite loss (--nan_policy skip).",
                          ()),
    "exit_code": ("Exit code this attempt ended with (docs/exit-codes.md); absent while it runs.", ()),
    "sample_wer": ("Word error rate of the last sample set (mean over its prompts; docs/synthesis.md).", ()),
    "sample_cer": ("Character error rate of the last sample set (mean over its prompts).", ()),
    "sample_speaker_similarity": ("Speaker similarity of the last sample set to its references (mean).", ()),
    "sample_best_wer": ("Lowest sample_wer so far in this run.", ()),
    "sample_best_speaker_similarity": ("Highest sample_speaker_similarity so far in this run.", ()),
    "sample_step": ("Optimizer step of the last sample set.", ()),
}
# job counters (name without prefix and `_total` -> help text); trainer.metrics.callback feeds them
JOB_COUNTERS = {
    "trained_samples": "Training samples trained on, all ranks.",
    "trained_tokens": "Input tokens trained on, all ranks.",
    "trained_audio_seconds": "Seconds of target audio trained on, all ranks.",
    "optimizer_steps": "Optimizer steps done by this attempt (skipped NaN steps included).",
    "nan_steps_skipped": "Optimizer steps skipped for a NaN or infinite loss (--nan_policy skip).",
    "step_seconds": ("Wall seconds of optimizer steps (fetching the batches, forward, backward, update), mean over "
                     "ranks."),
    "data_wait_seconds": "Of those, seconds spent waiting for the data loader's batches, mean over ranks.",
}
SUCCESS_GAUGES = {
    "last_success_time_seconds": ("Unix time at which the last successful run of this name ended.", ()),
}


class GaugeSet:
    """Gauges that exist only once set, or that are read from a function when collected.

    prometheus-client exports an unlabelled gauge as 0 from the start. Here that would lie: a loss never
    logged (no text head, no evaluation yet) would read as a perfect 0, and a checkpoint time of 0 as a
    checkpoint written in 1970, which the no-checkpoint alert would take at its word. Values that change
    every step (the global step) are read at collection time instead, on the pusher's thread, so that
    the training thread does not pay for them each step.

    Args:
        specs (`dict[str, tuple[str, tuple[str, ...]]]`):
            Name (without the `higgs_trainer_` prefix) -> (help text, label names).
    """

    def __init__(self, specs: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        self.specs = specs
        self._values: dict[str, dict[tuple[str, ...], float]] = {}
        self._functions: dict[str, Callable[[], float | None]] = {}

    def set(self, name: str, value: float, *label_values: str) -> None:
        self._values.setdefault(name, {})[label_values] = float(value)

    def set_function(self, name: str, function: Callable[[], float | None]) -> None:
        """Read unlabelled gauge `name` from `function` when collected; `None` leaves it out."""
        self._functions[name] = function

    def collect(self) -> Iterator[Metric]:
        for name, (doc, labels) in self.specs.items():
            values = list(self._values.get(name, {}).items())  # a copy: the training thread may add labels
            if name in self._functions and (value := self._functions[name]()) is not None:
                values = [((), value)]
            if values:
                family = GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=labels)
                for label_values, v in values:
                    family.add_metric(label_values, v)
                yield family


class JobSeries:
    """Series about the run as a whole; only rank 0 sets and pushes them.

    Three registries, because the gateway stores series per group and per name:

    - job series (rank 0 only, `registry`): losses, progress, throughput, checkpoints, status; group
      `job[, namespace]`.
    - rank series (every rank, `RankSeries`): device memory and push health; group `job[, namespace], rank`.
    - the last-success timestamp (`success`), pushed only when a run succeeds, to a group of its own
      (`job[, namespace], outcome="succeeded"`).

    Each attempt replaces its job and rank groups whole on its first push (see `trainer.metrics.delivery`), so
    that the gateway shows this attempt only; the last-success group is only ever added to, so no later attempt,
    not even a failed one, and no delete-on-finish removes it.

    Losses and throughput arrive already reduced over ranks (the trainer all-reduces them before it logs),
    so one copy per run is right and a sum over ranks would be wrong. `success` holds the last-success
    time apart, because it is pushed on success only.
    """

    def __init__(self) -> None:
        self.gauges = GaugeSet(JOB_GAUGES)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.gauges)
        self.skipped_samples = Counter(
            "skipped_samples", "Bad samples skipped while preparing the data.", namespace=NAMESPACE,
            registry=self.registry,
        )
        # Totals that only grow within an attempt, so that Prometheus computes rates over any window and a
        # missed scrape loses nothing; the *_per_second gauges above are the trainer's own window rates.
        self.counters = {
            name: Counter(name, doc, namespace=NAMESPACE, registry=self.registry)
            for name, doc in JOB_COUNTERS.items()
        }
        self.generated_clips = Counter(
            "generated_clips", "Clips synthesized as training samples.", namespace=NAMESPACE, registry=self.registry,
        )
        self.sample_failures = Counter(
            "sample_failures", "Sample sets that failed (logged; training goes on).", namespace=NAMESPACE,
            registry=self.registry,
        )
        self.success_gauges = GaugeSet(SUCCESS_GAUGES)
        self.success = CollectorRegistry(auto_describe=False)
        self.success.register(self.success_gauges)

    def set(self, name: str, value: float, *label_values: str) -> None:
        """Set the job gauge `name` (without prefix), e.g. `set("codebook_loss", 2.1, "0")`."""
        self.gauges.set(name, value, *label_values)

    def set_status(self, status: str) -> None:
        """Move the status state set to `status` (one of `STATUSES`)."""
        for name in STATUSES:
            self.gauges.set("run_status", 1.0 if name == status else 0.0, name)

    def set_success_time(self, when: float) -> None:
        """Set the last-success timestamp, pushed to its own group, which deleting the run's groups keeps."""
        self.success_gauges.set("last_success_time_seconds", when)


MEMORY_GAUGES = (
    ("device_memory_used_bytes",
     "Device memory held: the CUDA caching allocator's reserve, or the resident set on CPU."),
    ("device_memory_peak_bytes", "Highest device_memory_used_bytes so far."),
    ("device_memory_total_bytes", "Memory of the device (of the host on CPU)."),
)


class DeviceMemory:
    """The device-memory gauges of one rank, from one reading per collection, so that they agree."""

    def __init__(self, rank: str, memory: Callable[[], tuple[float, float, float]]) -> None:
        self.rank, self.memory = rank, memory

    def collect(self) -> Iterator[Metric]:
        for (name, doc), value in zip(MEMORY_GAUGES, self.memory(), strict=True):
            family = GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=("rank",))
            family.add_metric((self.rank,), value)
            yield family


class RankSeries:
    """Series each rank pushes for itself, under the extra grouping label `rank`.

    The `rank` label is on the series too, so that they keep it when rank 0 serves them on /metrics.
    Device memory is read when the series are collected (at a push or a scrape), on the pusher's or the
    server's thread: reading it costs about 13 us, which the training thread need not pay every log.

    Args:
        rank (`int`):
            Global rank of this process.
        pod (`str`):
            Host name: the pod's name in Kubernetes.
        memory (`Callable[[], tuple[float, float, float]]`):
            Returns (used, peak, total) bytes of this rank's device; called from other threads.
    """

    def __init__(self, rank: int, pod: str, memory: Callable[[], tuple[float, float, float]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = str(rank)

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, ("rank",), namespace=NAMESPACE, registry=self.registry).labels(r)

        info = Gauge(
            "rank_info", "1 per rank; `pod` joins the rank with per-pod series such as DCGM's.",
            ("rank", "pod"), namespace=NAMESPACE, registry=self.registry,
        )
        info.labels(r, pod).set(1.0)
        self.registry.register(DeviceMemory(r, memory))
        self.push_failures = Counter(
            "push_failures", "Pushes to the Pushgateway that failed or timed out.", ("rank",),
            namespace=NAMESPACE, registry=self.registry,
        ).labels(r)
        self.push_failure_time = gauge("push_failure_time_seconds", "Unix time of the last failed push.")


class Union:
    """Several collectors as one, so that one request carries them all (a pushadd or a /metrics page).

    `labels` are added to every sample. The /metrics page uses them to carry the run's `job` and
    `namespace`, which the gateway adds to pushed series: scraped with `honorLabels: true`, both ways
    of collecting give the same series, and the dashboard and alerts work on either.
    """

    def __init__(self, *parts: Collector, labels: dict[str, str] | None = None) -> None:
        self.parts, self.labels = parts, labels or {}

    def collect(self) -> Iterator[Metric]:
        """Every part's metrics, with `labels` added to each sample."""
        for part in self.parts:
            for metric in part.collect():
                if self.labels:
                    copy = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                    copy.samples = [s._replace(labels={**self.labels, **s.labels}) for s in metric.samples]
                    metric = copy
                yield metric


__all__ = ["NAMESPACE", "STATUSES", "SUCCESS_GROUP", "JobSeries", "RankSeries", "Union"]
