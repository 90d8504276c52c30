"""Reading a job, its pods and its Events: what `higgs-audio-trainer status` shows.

The job is required (a missing job, a cluster that cannot be reached or a refused read is a `JobReadError`
saying what was tried); its pods and Events add detail and may be unreadable (a Role without them, an API
server that serves no core resources): their error is kept beside the job instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainer.cluster.client import KINDS, JobKind
from trainer.cluster.events import ANNOTATION_PREFIX, COMPONENT

REQUEST_TIMEOUT = 10.0


class JobReadError(Exception):
    """The job could not be read; the message names the job, the API and what went wrong."""


@dataclass
class JobView:
    """A job as read at one moment: the object, its pods and its Events (or why they are missing)."""

    kind: JobKind
    job: dict[str, Any]
    pods: list[Any] = field(default_factory=list)
    pods_error: str | None = None
    events: list[Any] = field(default_factory=list)
    events_error: str | None = None


def api_error(err: BaseException) -> tuple[int | None, str]:
    """(HTTP status or None, one line) of a failed request."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(err, ApiException):
        return err.status, f"{err.status} {err.reason}".strip()
    return None, f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"


def read_job(api: Any, name: str, namespace: str, kinds: tuple[str, ...], target: str) -> tuple[JobKind, dict]:
    """The first of `kinds` named `name`; raises `JobReadError`."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    tried = []
    for kind_name in kinds:
        kind = KINDS[kind_name]
        try:
            return kind, custom.get_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name,
                                                             _request_timeout=REQUEST_TIMEOUT)
        except Exception as err:
            status, text = api_error(err)
            if status == 404:
                tried.append(f"{kind.plural}.{kind.group}")
                continue
            if status in (401, 403):
                raise JobReadError(f"no permission to get {kind.plural}.{kind.group} {namespace}/{name} on {target} "
                                   f"({text})") from None
            raise JobReadError(f"cannot read {kind_name} {namespace}/{name} from {target}: {text}") from None
    raise JobReadError(f"no {' or '.join(kinds)} named {name!r} in namespace {namespace!r} on {target} "
                       f"(looked for {', '.join(tried)})")


def read(api: Any, name: str, namespace: str, kinds: tuple[str, ...], target: str) -> JobView:
    """The job, its pods and its Events; a pod or Event list that cannot be read is kept as an error, not raised."""
    from kubernetes import client

    kind, job = read_job(api, name, namespace, kinds, target)
    view = JobView(kind, job)
    core = client.CoreV1Api(api)
    try:
        view.pods = core.list_namespaced_pod(namespace, label_selector=f"{kind.pod_selector}={name}",
                                             _request_timeout=REQUEST_TIMEOUT).items
    except Exception as err:
        view.pods_error = api_error(err)[1]
    try:
        found = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={kind.kind}",
            _request_timeout=REQUEST_TIMEOUT).items
        view.events = sorted(found, key=lambda e: str(e.last_timestamp or e.first_timestamp or ""))
    except Exception as err:
        view.events_error = api_error(err)[1]
    return view


def trainer_events(view: JobView) -> list[Any]:
    """The Events this project recorded, oldest first."""
    return [e for e in view.events if (e.source and e.source.component == COMPONENT)
            or e.reporting_component == COMPONENT]


def annotation(event: Any, key: str) -> str | None:
    """One of this project's annotations of an Event (the prefix added), or None."""
    return ((event.metadata and event.metadata.annotations) or {}).get(ANNOTATION_PREFIX + key)
