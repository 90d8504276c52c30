"""`higgs-audio-trainer status` on a real API server (etcd + apiextensions-apiserver serving the Kubeflow
CRDs, tests/apiserver.py): jobs created there, their status written through the status subresource as the
operator writes it, and every error case. That server serves no Pods or Events: how status reads those is
tested on the client's own models filled from recorded responses (the last test, named so)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.apiserver import api_server
from trainer import errors
from trainer.__main__ import main

POD = {"restartPolicy": "OnFailure", "containers": [{"name": "pytorch", "image": "trainer:test"}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with api_server(tmp_path_factory.mktemp("apiserver")) as s:
        yield s


@pytest.fixture
def custom(server, monkeypatch):
    from kubernetes import client

    monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig()))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return client.CustomObjectsApi(server.client())


def create_pytorchjob(custom, name: str) -> None:
    custom.create_namespaced_custom_object("kubeflow.org", "v1", "team", "pytorchjobs", {
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name},
        "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": POD}}}}})


def set_conditions(custom, name: str, *conditions: tuple[str, str, str], group: str = "kubeflow.org",
                   version: str = "v1", plural: str = "pytorchjobs") -> None:
    """Write status.conditions as the operator does: the newest condition True, those before it False."""
    job = custom.get_namespaced_custom_object(group, version, "team", plural, name)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    job["status"] = {"conditions": [
        {"type": t, "status": "True" if i == len(conditions) - 1 or t == "Created" else "False", "reason": r,
         "message": m, "lastTransitionTime": now}
        for i, (t, r, m) in enumerate(conditions)]}
    if plural == "pytorchjobs":
        job["status"]["replicaStatuses"] = {}
    custom.replace_namespaced_custom_object_status(group, version, "team", plural, name, job)


def status(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["status", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_status_follows_a_pytorchjob_through_each_condition_the_operator_sets(custom, capsys) -> None:
    create_pytorchjob(custom, "demo")
    code, out, _ = status(capsys, "demo", "-n", "team")
    assert code == 0
    assert out.startswith("PyTorchJob team/demo: running\n  no conditions yet")
    assert "pods: not readable (404 Not Found)" in out  # this API server serves no Pods
    assert "next: waiting: the job has no running pods yet" in out

    steps = [("Created", "PyTorchJobCreated", "PyTorchJob demo is created.")]
    set_conditions(custom, "demo", *steps)
    assert "  Created=True (PyTorchJobCreated: PyTorchJob demo is created.)" in status(capsys, "demo")[1]
    steps.append(("Running", "PyTorchJobRunning", "PyTorchJob team/demo is running."))
    set_conditions(custom, "demo", *steps)
    out = status(capsys, "demo")[1]  # the namespace from the kubeconfig's context
    assert "  Running=True" in out and "next: running: the trainer is starting" in out
    steps.append(("Restarting", "PyTorchJobRestarting",
                  "PyTorchJob demo is restarting because 1 Master replica(s) failed."))
    set_conditions(custom, "demo", *steps)
    out = status(capsys, "demo")[1]
    assert "  Running=False" in out and "  Restarting=True" in out
    assert "next: restarting; the operator restarts it and it starts again from the beginning" in out
    set_conditions(custom, "demo", *steps,
                   ("Succeeded", "PyTorchJobSucceeded", "PyTorchJob demo successfully completed."))
    code, out, _ = status(capsys, "demo", "--wait")
    assert (code, out) == (0, "")

    create_pytorchjob(custom, "broken")
    set_conditions(custom, "broken", steps[0],
                   ("Failed", "PyTorchJobFailed", "PyTorchJob broken is failed because 1 Master replica(s) failed."))
    code, out, _ = status(capsys, "broken", "--wait")
    assert (code, out) == (errors.FAILURE, "")
    code, out, _ = status(capsys, "broken")
    assert code == 0 and out.startswith("PyTorchJob team/broken: failed")
    assert "next: done: failed; the operator does not restart it (PyTorchJob broken is failed" in out


def test_wait_and_watch_return_when_the_job_ends(custom, capsys) -> None:
    create_pytorchjob(custom, "later")
    set_conditions(custom, "later", ("Created", "PyTorchJobCreated", ""), ("Running", "PyTorchJobRunning", ""))
    ender = threading.Timer(1.5, set_conditions, (custom, "later", ("Created", "PyTorchJobCreated", ""),
                                                  ("Running", "PyTorchJobRunning", ""),
                                                  ("Succeeded", "PyTorchJobSucceeded", "")))
    ender.start()
    began = time.monotonic()
    code, out, _ = status(capsys, "later", "--watch", "--interval", "0.2")
    ender.join()
    assert code == 0 and time.monotonic() - began >= 1.4
    assert "PyTorchJob team/later: running" in out and "PyTorchJob team/later: succeeded" in out


def test_status_finds_a_trainjob(custom, capsys) -> None:
    custom.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", "team", "trainjobs", {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "tj"},
        "spec": {"runtimeRef": {"name": "torch-distributed"}}})
    set_conditions(custom, "tj", ("Complete", "JobsCompleted", "TrainJob is completed"),
                   group="trainer.kubeflow.org", version="v1alpha1", plural="trainjobs")
    code, out, _ = status(capsys, "tj", "-n", "team")
    assert code == 0 and out.startswith("TrainJob team/tj: succeeded")
    assert status(capsys, "tj", "--wait")[0] == 0


def test_each_error_is_one_line_and_exit_code_2(server, custom, capsys, monkeypatch, tmp_path) -> None:
    code, out, err = status(capsys, "nope")
    assert code == errors.CONFIG_ERROR and out == ""
    assert err.startswith("higgs-audio-trainer status: no PyTorchJob or TrainJob named 'nope' in namespace 'team' on "
                          f"{server.url}") and err.count("\n") == 1

    create_pytorchjob(custom, "private")
    monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(user="viewer")))
    code, _, err = status(capsys, "private")
    assert code == errors.CONFIG_ERROR and err.count("\n") == 1
    assert "no permission to get pytorchjobs.kubeflow.org team/private" in err and "403 Forbidden" in err

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    from tests.trainer.cluster.events_api import kubeconfig

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{closed}")))
    code, _, err = status(capsys, "private")
    assert code == errors.CONFIG_ERROR and err.count("\n") == 1
    assert err.startswith(f"higgs-audio-trainer status: cannot read PyTorchJob team/private from http://127.0.0.1:{closed}")

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    code, _, err = status(capsys, "private")
    assert code == errors.CONFIG_ERROR
    assert err == (f"higgs-audio-trainer status: no cluster to ask: no kubeconfig at {tmp_path / 'absent'} "
                   "(KUBECONFIG or ~/.kube/config) and not in a pod\n")
    assert "Traceback" not in err


def test_pods_and_events_are_decoded_recorded_responses() -> None:
    """Pods and Events as a full API server returns them (recorded responses, read into the client's own
    models): the last exit decoded with the exit table, the progress from the trainer's Events, and the
    preempted run's next step."""
    from kubernetes.client import CoreV1EventList, V1PodList

    from trainer.cluster.client import KINDS
    from trainer.cluster.jobs import JobView
    from trainer.commands.status import render

    pods = V1PodList.from_dict({"items": [{
        "metadata": {"name": "demo-master-0", "labels": {"training.kubeflow.org/replica-type": "master",
                                                          "training.kubeflow.org/replica-index": "0"}},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "pytorch", "image": "trainer", "imageID": "", "ready": True, "restartCount": 1,
            "state": {"running": {"startedAt": "2026-12-04T10:00:00Z"}},
            "lastState": {"terminated": {
                "exitCode": 143, "reason": "Error",
                "message": "rank 0: stopped by SIGTERM at step 380: checkpoint-380 saved"}}}]}}]})

    def event(reason: str, when: str, **ann: str) -> dict:
        return {"metadata": {"name": f"demo.{reason}", "annotations": {f"higgs-audio-trainer/{k.replace('_', '-')}": v
                                                                       for k, v in ann.items()}},
                "involvedObject": {"kind": "PyTorchJob", "name": "demo"}, "reason": reason, "message": reason,
                "source": {"component": "higgs-audio-trainer"}, "lastTimestamp": when}

    events = CoreV1EventList.from_dict({"items": [
        event("TrainingStarted", "2026-12-04T09:00:00Z", step="0"),
        event("CheckpointSaved", "2026-12-04T09:30:00Z", step="380", max_steps="1000", checkpoint="checkpoint-380",
              loss="2.31"),
        event("TrainingStopped", "2026-12-04T09:59:00Z", step="380", exit_code="143", checkpoint="checkpoint-380")]})
    job = {"status": {"conditions": [{"type": "Created", "status": "True"},
                                     {"type": "Restarting", "status": "True"}]}}
    text = render(JobView(KINDS["PyTorchJob"], job, pods.items, None, events.items, None), "demo", "team")
    assert ("  master-0 demo-master-0: Running, 1 restarts; last exit 143 (stopped by SIGTERM (preemption, "
            "eviction, `docker stop`)") in text
    assert ": rank 0: stopped by SIGTERM at step 380: checkpoint-380 saved" in text
    assert "progress: step 380 of 1000, last checkpoint checkpoint-380, loss 2.31" in text
    assert text.endswith("next: preempted at step 380; the operator restarts it and it resumes from checkpoint-380")


def test_what_the_cluster_keeps_after_a_pod_is_replaced_and_after_a_permanent_failure() -> None:
    """Shapes the real operator v1.9.4 and API server produced on the cluster tier (tests/cluster/), read into
    the client's models: a recreated pod's restart count is 0 and its old exit code gone, so they come from the
    operator's ExitedWithCode Events; a False Running condition keeps its stale "is running." message, which is
    left out; an init container's failure is shown with its message."""
    from kubernetes.client import CoreV1EventList, V1PodList

    from trainer.cluster.client import KINDS
    from trainer.cluster.jobs import JobView
    from trainer.commands.status import render

    def pod(name: str, created: str, phase: str, code: int | None, init_code: int = 0) -> dict:
        state = {"terminated": {"exitCode": code, "reason": "Error"}} if code is not None else {"waiting": {}}
        return {"metadata": {"name": name, "creationTimestamp": created, "labels": {
                    "training.kubeflow.org/replica-type": "worker", "training.kubeflow.org/replica-index": "0"}},
                "status": {"phase": phase, "containerStatuses": [{
                    "name": "pytorch", "image": "t", "imageID": "", "ready": False, "restartCount": 0,
                    "state": state}],
                    "initContainerStatuses": [{
                        "name": "preflight", "image": "t", "imageID": "", "ready": False, "restartCount": 0,
                        "state": {"terminated": {"exitCode": init_code, "message": "preflight failed: /output is "
                                                 "not writable" if init_code else None}}}]}}

    def exited(pod_name: str, code: int, when: str) -> dict:
        return {"metadata": {"name": f"demo.{when}"}, "involvedObject": {"kind": "PyTorchJob", "name": "demo"},
                "reason": "ExitedWithCode", "message": f"Pod: team.{pod_name} exited with code {code}",
                "source": {"component": "pytorchjob-controller"}, "lastTimestamp": when}

    pods = V1PodList.from_dict({"items": [pod("demo-worker-0", "2026-12-06T08:00:10Z", "Failed", 6)]}).items
    events = CoreV1EventList.from_dict({"items": [{**exited("demo-worker-0", 137, "2026-12-06T08:00:05Z"), "count": 2},
                                                  exited("demo-worker-0", 6, "2026-12-06T08:00:30Z")]}).items
    job = {"status": {"conditions": [
        {"type": "Running", "status": "False", "reason": "PyTorchJobRunning", "message": "PyTorchJob demo is running."},
        {"type": "Failed", "status": "True", "reason": "PyTorchJobFailed", "message": "PyTorchJob demo is failed."}]}}
    text = render(JobView(KINDS["PyTorchJob"], job, pods, None, events, None), "demo", "team")
    assert ("  worker-0 demo-worker-0: Failed, 2 restarts; recreated by the operator after exit 137 (killed by "
            "signal 9); last exit 6 (retry budget spent") in text
    assert "  Running=False\n" in text and "is running." not in text
    assert "next: done: failed" in text

    looping = V1PodList.from_dict({"items": [pod("demo-worker-0", "2026-12-06T08:00:10Z", "Failed", None, 2)]}).items
    text = render(JobView(KINDS["PyTorchJob"], {"status": {"conditions": []}}, looping, None, [], None), "demo",
                  "team")
    assert ("demo-worker-0: Failed, 0 restarts; init container preflight exited 2 (configuration error (flag, env "
            "var, YAML key or path)): preflight failed: /output is not writable") in text
    assert text.endswith("next: demo-worker-0's init container preflight failed (exit code 2); the operator reads "
                         "only the trainer container's exit code, so under restartPolicy ExitCode it recreates the "
                         "pod again and again (until activeDeadlineSeconds): fix the cause (above) or delete the "
                         "job")
