"""`higgs-audio-trainer status`: what a run on the cluster is doing and why it stopped, without reading pod logs.

Usage: `higgs-audio-trainer status NAME [-n NAMESPACE] [--watch | --wait]`.

Reads the PyTorchJob (or TrainJob), its pods and its Events with the kubeconfig (or in-cluster) credentials:
the job's conditions, each pod's phase, restarts and last exit code decoded with the project's exit table
and its termination message, the trainer's progress from its Events, and one line saying what happens next.
`--watch` prints each change until the job ends; `--wait` prints nothing until then. Both exit 0 when the
job succeeded and 1 when it failed; a cluster that cannot be reached, a missing job or a refused read is one
line and exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from trainer import errors
from trainer.cluster.client import KINDS, ClusterUnavailable, api_client, default_namespace
from trainer.cluster.events import FAILED, PREFLIGHT_FAILED, REASONS, STOPPED
from trainer.cluster.jobs import JobReadError, JobView, annotation, read, trainer_events

SUCCESS_TYPES = ("Succeeded", "Complete")


def conditions(job: dict) -> list[dict]:
    """The job's conditions that hold now (status "True"); the others keep stale reasons."""
    return [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]


def outcome(job: dict) -> str | None:
    """"succeeded", "failed" or None while the job runs."""
    types = {c.get("type") for c in conditions(job)}
    if types & set(SUCCESS_TYPES):
        return "succeeded"
    if "Failed" in types:
        return "failed"
    return None


def meaning(code: int) -> str:
    """What an exit code means: the project's table, a signal, or a plain exit code."""
    if code in errors.TABLE:
        return errors.TABLE[code]
    return f"killed by signal {code - errors.SIGNAL_BASE}" if code > errors.SIGNAL_BASE else "exit code"


def _last_terminated(pod: Any) -> Any:
    """The terminated state of the pod's trainer container's last ending (now, or before its restart), if any."""
    for status in (pod.status and pod.status.container_statuses) or []:
        for state in (status.state, status.last_state):
            term = state and state.terminated
            if term is not None:
                return term
    return None


def last_exit(pod: Any) -> tuple[int, str] | None:
    """(exit code, termination message) of the pod's trainer container's last ending, if any."""
    term = _last_terminated(pod)
    if term is None:
        return None
    return int(term.exit_code), " ".join((term.message or term.reason or "").split())


EXITED = re.compile(r"Pod: (?P<ns>[^.\s]+)\.(?P<pod>\S+) exited with code (?P<code>-?\d+)")


def operator_exits(events: list[Any]) -> dict[str, list[tuple[Any, int]]]:
    """Pod name -> [(time, exit code)] of the operator's `ExitedWithCode` Events, oldest first.

    Under `restartPolicy: ExitCode` the operator deletes a pod that exited with a retried code and creates a
    new one of the same name: its restart count is 0 again and its last exit code is gone. These Events are
    the only record of the endings before it.
    """
    found: dict[str, list[tuple[Any, int]]] = {}
    for event in events:
        match = EXITED.search(event.message or "") if event.reason == "ExitedWithCode" else None
        if match:
            when = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
            # the same ending twice is one Event counted twice (the recorder folds repeats)
            found.setdefault(match["pod"], []).extend([(when, int(match["code"]))] * (event.count or 1))
    return found


def _before(when: Any, created: Any) -> bool:
    try:
        return when is not None and created is not None and when <= created
    except TypeError:
        return False


def earlier_exits(pod: Any, exits: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    """The operator's exit Events of the pods that had this pod's name before it: those at or before its creation.

    Events and creation times have whole seconds, so a pod that ends within the second it was created (a
    configuration error) has its own exit Event in that second too. That Event is its own, not an earlier
    pod's: when the pod finished in its creation second, the last Event of that second with the code it ended
    with is left out.
    """
    created = pod.metadata.creation_timestamp
    earlier = [(w, c) for w, c in exits if _before(w, created)]
    own = _last_terminated(pod)
    if own is not None:
        for i in range(len(earlier) - 1, -1, -1):
            when, c = earlier[i]
            if c == int(own.exit_code) and when == created == own.finished_at:
                del earlier[i]
                break
    return earlier


def pod_line(pod: Any, exits: dict[str, list[tuple[Any, int]]] | None = None) -> str:
    """One line per pod: role, index, phase, restarts and the exits of its earlier containers."""
    labels = pod.metadata.labels or {}
    role = labels.get("training.kubeflow.org/replica-type") or labels.get("jobset.sigs.k8s.io/replicatedjob-name")
    index = labels.get("training.kubeflow.org/replica-index") or labels.get("jobset.sigs.k8s.io/job-index")
    restarts = sum(s.restart_count or 0 for s in (pod.status.container_statuses or []))
    earlier = earlier_exits(pod, (exits or {}).get(pod.metadata.name, []))
    restarts += len(earlier)  # pods the operator replaced under this name
    line = f"  {role or 'pod'}-{index or 0} {pod.metadata.name}: {pod.status.phase}, {restarts} restarts"
    if earlier:
        code = earlier[-1][1]
        line += f"; recreated by the operator after exit {code} ({meaning(code)})"
    ended = last_exit(pod)
    if ended:
        code, message = ended
        line += f"; last exit {code} ({meaning(code)})" + (f": {message}" if message else "")
    failed_init = failed_init_container(pod)
    if failed_init:
        name, code, message = failed_init
        line += f"; init container {name} exited {code} ({meaning(code)})" + (f": {message}" if message else "")
    return line


def failed_init_container(pod: Any) -> tuple[str, int, str] | None:
    """(name, exit code, message) of an init container that failed (one of `initContainers`), if one did."""
    for status in (pod.status and pod.status.init_container_statuses) or []:
        term = status.state and status.state.terminated
        if term is not None and term.exit_code:
            return status.name, int(term.exit_code), " ".join((term.message or term.reason or "").split())
    return None


def progress(events: list[Any]) -> dict[str, str]:
    """step, max-steps, checkpoint, loss, output, exit-code: the newest value of each in the trainer's Events."""
    found: dict[str, str] = {}
    for event in events:
        for key in ("step", "max-steps", "checkpoint", "loss", "output", "exit-code"):
            value = annotation(event, key)
            if value is not None:
                found[key] = value
    return found


def next_line(view: JobView) -> str:
    """One sentence: what happens next."""
    job, events = view.job, trainer_events(view)
    done, info = outcome(job), progress(events)
    step = info.get("step")
    at = f" at step {step}" if step else ""
    checkpoint = info.get("checkpoint")
    resume = f"it resumes from {checkpoint}" if checkpoint else "it starts again from the beginning (no checkpoint)"
    if done == "succeeded":
        return "done: succeeded" + (f"; the result is in {info['output']}" if "output" in info else "")
    failed = [c for c in conditions(job) if c.get("type") == "Failed"]
    if done == "failed":
        why = failed[0].get("message") or failed[0].get("reason") or ""
        return f"done: failed{at}; the operator does not restart it" + (f" ({why})" if why else "")
    types = {c.get("type") for c in conditions(job)}
    init = [(p.metadata.name, f) for p in view.pods if (f := failed_init_container(p))]
    if init:
        pod, (name, code, _) = init[0]
        return (f"{pod}'s init container {name} failed (exit code {code}); the operator reads only the trainer "
                "container's exit code, so under restartPolicy ExitCode it recreates the pod again and again "
                "(until activeDeadlineSeconds): fix the cause (above) or delete the job")
    if "Suspended" in types:
        return "suspended: no pods until the job is resumed"
    last = events[-1] if events else None
    if "Restarting" in types or (last is not None and last.reason in (STOPPED, FAILED, PREFLIGHT_FAILED)):
        code = annotation(last, "exit-code") if last is not None else None
        if code is not None and int(code) < errors.SIGNAL_BASE:
            return f"exit code {code} ({meaning(int(code))}){at}: not retried, the job fails"
        what = "preempted" if code == str(errors.PREEMPTED) else f"stopped (exit code {code})" if code else "restarting"
        return f"{what}{at}; the operator restarts it and {resume}"
    if "Running" in types:
        of = f" of {info['max-steps']}" if "max-steps" in info else ""
        return f"training{at}{of}" if step else "running: the trainer is starting"
    return "waiting: the job has no running pods yet"


def render(view: JobView, name: str, namespace: str) -> str:
    """The whole report of one job: its state, conditions, pods and this project's Events."""
    kind, job = view.kind.kind, view.job
    lines = [f"{kind} {namespace}/{name}: {outcome(job) or 'running'}"]
    for c in (job.get("status") or {}).get("conditions") or []:
        text = f"  {c.get('type')}={c.get('status')}"
        # A condition that is no longer True keeps its old reason and message ("... is running." on a failed
        # job): only a True one's are current.
        extra = ": ".join(x for x in (c.get("reason"), c.get("message")) if x) if c.get("status") == "True" else ""
        lines.append(text + (f" ({extra})" if extra else "") + (f" since {c['lastTransitionTime']}"
                                                                  if c.get("lastTransitionTime") else ""))
    if not (job.get("status") or {}).get("conditions"):
        lines.append("  no conditions yet (the operator has not seen the job)")
    if view.pods_error:
        lines.append(f"pods: not readable ({view.pods_error})")
    else:
        lines.append(f"pods: {len(view.pods)}")
        exits = operator_exits(view.events)
        lines += [pod_line(p, exits) for p in view.pods]
    if view.events_error:
        lines.append(f"progress: Events not readable ({view.events_error})")
    else:
        info = progress(trainer_events(view))
        parts = [f"step {info['step']}" + (f" of {info['max-steps']}" if "max-steps" in info else "")
                 if "step" in info else "no step reported yet"]
        parts += [f"last checkpoint {info['checkpoint']}"] if "checkpoint" in info else []
        parts += [f"loss {info['loss']}"] if "loss" in info else []
        lines.append("progress: " + ", ".join(parts))
        lines += [f"  {e.reason}: {e.message}" for e in trainer_events(view)[-5:]
                  if e.reason in REASONS]
    lines.append("next: " + next_line(view))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The flags of `status`."""
    p = argparse.ArgumentParser(prog="higgs-audio-trainer status", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="the PyTorchJob's or TrainJob's name")
    p.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    p.add_argument("--kind", choices=tuple(KINDS), help="look for this kind only (default: both)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--watch", action="store_true", help="print every change until the job ends")
    mode.add_argument("--wait", action="store_true", help="print nothing; exit 0 on success, 1 on failure")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between two reads (--watch, --wait)")
    return p


def run(argv: Sequence[str]) -> int:
    """`higgs-audio-trainer status`: print the report (once, on every change, or at the end); returns the exit code."""
    args = parser().parse_args(list(argv))
    try:
        api, target = api_client()
    except ClusterUnavailable as err:
        print(f"higgs-audio-trainer status: no cluster to ask: {err}", file=sys.stderr)
        return errors.CONFIG_ERROR
    namespace = args.namespace or default_namespace()
    kinds = (args.kind,) if args.kind else tuple(KINDS)
    shown = None
    while True:
        try:
            view = read(api, args.name, namespace, kinds, target)
        except JobReadError as err:
            print(f"higgs-audio-trainer status: {err}", file=sys.stderr)
            return errors.CONFIG_ERROR
        kinds = (view.kind.kind,)
        text, done = render(view, args.name, namespace), outcome(view.job)
        if not args.wait and text != shown:
            print(text + ("\n" if args.watch else ""), flush=True)
            shown = text
        if not (args.watch or args.wait):
            return errors.OK
        if done:
            return errors.OK if done == "succeeded" else errors.FAILURE
        time.sleep(args.interval)
