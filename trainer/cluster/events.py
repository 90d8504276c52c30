"""Kubernetes Events on the job object, recorded best effort like the metrics push.

Rank 0 (the checkpoint events), the launcher of node 0 (start, resume, stop, failure, success) and the
launcher of any node whose preflight failed record Events about the PyTorchJob or TrainJob, so that
`kubectl describe pytorchjob NAME`, `kubectl get events` and `higgs-audio-trainer status` say what the run
did without its logs. Every request runs on a daemon
thread with a timeout: a slow, missing or forbidden API server costs a counted failure and a warning, never
training time, and `close` waits a bounded time. The Events carry their numbers as annotations
(`ANNOTATION_PREFIX`), which `status` reads back.

API use, and so the chart's Role (tests/chart/test_rbac.py compares them): `get` on the job (for its uid,
which `kubectl describe` matches Events on) and `create` on core `events`.
"""

from __future__ import annotations

import datetime
import logging
import queue
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from trainer import errors
from trainer.cluster.client import KINDS, ClusterUnavailable, api_client, in_cluster, namespace_of_pod
from trainer.rank_reports import one_line

log = logging.getLogger(__name__)

COMPONENT = "higgs-audio-trainer"
ANNOTATION_PREFIX = "higgs-audio-trainer/"
# The API calls this module makes, as (API group, resource, verb): the chart's Role grants these and no more.
API_USE = (("kubeflow.org", "pytorchjobs", "get"), ("trainer.kubeflow.org", "trainjobs", "get"),
           ("", "events", "create"))
WARN_EVERY_SECONDS = 300.0
CHECKPOINT_EVENT_SECONDS = 60.0  # at most one checkpoint Event a minute

# Reasons a user can filter on (`kubectl get events --field-selector reason=CheckpointSaved`).
STARTED, RESUMED, CHECKPOINT = "TrainingStarted", "TrainingResumed", "CheckpointSaved"
STOPPED, FAILED, SUCCEEDED = "TrainingStopped", "TrainingFailed", "TrainingSucceeded"
PREFLIGHT_FAILED = "PreflightFailed"
REASONS = (STARTED, RESUMED, CHECKPOINT, STOPPED, FAILED, SUCCEEDED, PREFLIGHT_FAILED)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Records Events on one job from a daemon thread; `record` never blocks, `close` waits a bounded time.

    Args:
        api (`kubernetes.client.ApiClient`):
            The client, configured.
        kind (`str`):
            PyTorchJob or TrainJob.
        name (`str`):
            The job's name.
        namespace (`str`):
            The job's namespace.
        timeout (`float`):
            Timeout of one request.
        target (`str`):
            Where the client points, for messages.
    """

    def __init__(self, api: Any, kind: str, name: str, namespace: str, *, timeout: float, target: str) -> None:
        self.api, self.job, self.name, self.namespace = api, KINDS[kind], name, namespace
        self.timeout, self.target = timeout, f"{kind} {namespace}/{name} via {target}"
        self.sent = self.failures = 0
        self.uid: str | None = None
        self.instance = socket.gethostname()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._last_warning = 0.0
        self._last_checkpoint = float("-inf")
        self._thread = threading.Thread(target=self._run, name="job-events", daemon=True)
        self._thread.start()

    # ---- what the run reports ------------------------------------------------------------------------
    def started(self, attempt: int | None = None) -> None:
        """Record that training began from nothing, so the job shows no checkpoint was found."""
        self.record(STARTED, "Normal", "training started fresh (no checkpoint)" + _attempt(attempt),
                    step=0, attempt=attempt)

    def resumed(self, checkpoint: str, step: int, attempt: int | None = None) -> None:
        """Record the checkpoint and step training resumed from, so a restart is visible on the job."""
        self.record(RESUMED, "Normal", f"training resumed from {checkpoint} at step {step}" + _attempt(attempt),
                    step=step, checkpoint=checkpoint, attempt=attempt)

    def checkpoint_saved(self, step: int, max_steps: int | None, size: int | None, loss: float | None,
                         *, now: float | None = None) -> bool:
        """A checkpoint Event, at most one per `CHECKPOINT_EVENT_SECONDS`; True if this one was queued."""
        now = time.monotonic() if now is None else now
        if now - self._last_checkpoint < CHECKPOINT_EVENT_SECONDS:
            return False
        self._last_checkpoint = now
        of = f" of {max_steps}" if max_steps and max_steps > 0 else ""
        size_text = f", {size / 2**20:.1f} MiB" if size else ""
        loss_text = f", loss {loss:.4g}" if loss is not None else ""
        self.record(CHECKPOINT, "Normal", f"checkpoint-{step} saved at step {step}{of}{size_text}{loss_text}",
                    step=step, max_steps=max_steps, checkpoint=f"checkpoint-{step}", bytes=size, loss=loss)
        return True

    def stopped(self, code: int, reason: str, checkpoint: str | None, step: int) -> None:
        """Record a stop with its exit code and the newest checkpoint, where a resubmitted job will resume."""
        saved = f"; newest checkpoint {checkpoint} (step {step})" if checkpoint else "; no checkpoint yet"
        self.record(STOPPED, "Warning", f"exit code {code}: {reason}{saved}", exit_code=code, step=step,
                    checkpoint=checkpoint)

    def failed(self, code: int, reason: str, step: int) -> None:
        """Record a failure with its exit code and what the code means, without reading pod logs."""
        meaning = errors.TABLE.get(code, "killed by a signal" if code >= errors.SIGNAL_BASE else "failed")
        self.record(FAILED, "Warning", f"exit code {code} ({meaning}): {reason}", exit_code=code, step=step)

    def preflight_failed(self, code: int, reason: str) -> None:
        """The launcher's checks before torchrun failed on this pod (every node records its own)."""
        self.record(PREFLIGHT_FAILED, "Warning", f"{self.instance}: exit code {code}: {reason}", exit_code=code)

    def succeeded(self, final_output: str, step: int) -> None:
        """Record success and where the final adapter or model was written."""
        self.record(SUCCEEDED, "Normal", f"training succeeded at step {step}; the result is in {final_output}",
                    exit_code=0, step=step, output=final_output)

    # ---- delivery --------------------------------------------------------------------------------------
    def record(self, reason: str, type_: str, message: str, **fields: Any) -> None:
        """Queue one Event; never blocks, never raises."""
        annotations = {ANNOTATION_PREFIX + k.replace("_", "-"): str(v) for k, v in fields.items() if v is not None}
        with self._lock:
            self._pending += 1
        self._queue.put({"reason": reason, "type": type_, "message": one_line(message),
                         "annotations": annotations, "time": _now()})

    def close(self) -> tuple[int, int]:
        """Wait for the queued Events (a bounded time); returns (sent, failed), unsent ones counted failed."""
        self._queue.put(None)
        with self._lock:
            pending = self._pending
        self._thread.join(self.timeout * (2 * pending + 1) + 1.0)
        with self._lock:
            return self.sent, self.failures + self._pending

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._send(item)
                with self._lock:
                    self.sent += 1
                self._recovered()
            except Exception as exc:  # any failure of the API server must stay out of training
                self._failed(exc)
            finally:
                with self._lock:
                    self._pending -= 1

    def _send(self, item: dict[str, Any]) -> None:
        from kubernetes import client

        if self.uid is None:
            try:
                job = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                    self.job.group, self.job.version, self.namespace, self.job.plural, self.name,
                    _request_timeout=self.timeout)
                self.uid = job.get("metadata", {}).get("uid")
            except Exception as exc:  # the Event is still worth having; `kubectl get events` lists it
                self._failed(exc, what="reading the job's uid")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{self.name}.", "namespace": self.namespace,
                         "annotations": item["annotations"]},
            "involvedObject": {"apiVersion": self.job.api_version, "kind": self.job.kind, "name": self.name,
                               "namespace": self.namespace, **({"uid": self.uid} if self.uid else {})},
            "reason": item["reason"], "message": item["message"], "type": item["type"],
            "firstTimestamp": item["time"], "lastTimestamp": item["time"], "count": 1,
            "source": {"component": COMPONENT, "host": self.instance},
            "reportingComponent": COMPONENT, "reportingInstance": self.instance,
        }
        client.CoreV1Api(self.api).create_namespaced_event(self.namespace, body, _request_timeout=self.timeout)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("events: recording on %s works again", self.target)
            self._failing_since = None

    def _failed(self, exc: Exception, what: str = "recording an Event") -> None:
        with self._lock:
            if what == "recording an Event":
                self.failures += 1
        now = time.time()
        first = self._failing_since is None
        if first:
            self._failing_since = now
        if first or now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning("events: %s on %s failed (%s: %s); training goes on", what, self.target,
                        type(exc).__name__, one_line(str(exc), 300))


def _attempt(attempt: int | None) -> str:
    return f" (attempt {attempt})" if attempt else ""


def recorder_from_options(opts: Any, environ: Mapping[str, str]) -> EventRecorder | None:
    """A recorder for the job `opts` (`ClusterArgs`) names, or None.

    Events off, no job name, or no credentials (outside a cluster, with no kubeconfig). Never raises.
    """
    if not opts.events or not opts.job_name:
        return None
    try:
        api, target = api_client(environ)
    except ClusterUnavailable as err:
        log.info("events: off (%s)", err)
        return None
    except Exception as err:  # a broken kubeconfig must not stop training either
        log.warning("events: off (%s: %s)", type(err).__name__, err)
        return None
    namespace = opts.job_namespace or (namespace_of_pod(environ) if in_cluster(environ) else None) or "default"
    return EventRecorder(api, opts.job_kind, opts.job_name, namespace, timeout=opts.events_timeout_seconds,
                         target=target)
