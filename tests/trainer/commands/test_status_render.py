"""How `higgs-audio-trainer status` reads Pods and Events, which the status tests' API server does not serve:
the client's own models filled from recorded responses (named so)."""

from __future__ import annotations


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
                        "name": "fetch-data", "image": "t", "imageID": "", "ready": False, "restartCount": 0,
                        "state": {"terminated": {"exitCode": init_code, "message": "bucket s3://data not found"
                                                 if init_code else None}}}]}}

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
    assert ("demo-worker-0: Failed, 0 restarts; init container fetch-data exited 2 (configuration error (flag, env "
            "var, YAML key or path)): bucket s3://data not found") in text
    assert text.endswith("next: demo-worker-0's init container fetch-data failed (exit code 2); the operator reads "
                         "only the trainer container's exit code, so under restartPolicy ExitCode it recreates the "
                         "pod again and again (until activeDeadlineSeconds): fix the cause (above) or delete the "
                         "job")


def test_a_preflight_failed_event_is_shown_and_says_the_job_fails_before_the_operator_does() -> None:
    """The launcher's PreflightFailed Event (its exit code as annotation), read before the operator has marked
    the job Failed: shown among the trainer's Events, and the next line says the code is not retried."""
    from kubernetes.client import CoreV1EventList

    from trainer.cluster.client import KINDS
    from trainer.cluster.jobs import JobView
    from trainer.commands.status import render

    why = "preflight failed: /dev/shm: 64.0 MiB, at least 1.00 GiB needed"
    events = CoreV1EventList.from_dict({"items": [{
        "metadata": {"name": "demo.1", "annotations": {"higgs-audio-trainer/exit-code": "2"}},
        "involvedObject": {"kind": "PyTorchJob", "name": "demo"}, "reason": "PreflightFailed", "type": "Warning",
        "message": f"demo-worker-0: exit code 2: {why}", "source": {"component": "higgs-audio-trainer"},
        "lastTimestamp": "2026-12-06T08:00:05Z"}]}).items
    job = {"status": {"conditions": [{"type": "Running", "status": "True", "reason": "PyTorchJobRunning"}]}}
    text = render(JobView(KINDS["PyTorchJob"], job, [], None, events, None), "demo", "team")
    assert f"  PreflightFailed: demo-worker-0: exit code 2: {why}" in text
    assert text.endswith("next: exit code 2 (configuration error (flag, env var, YAML key or path)): not retried, "
                         "the job fails")


def test_a_pod_that_fails_within_its_creation_second_has_no_restart_from_its_own_exit_event() -> None:
    """A configuration error ends the pod in the second it was created; the operator's ExitedWithCode Event for
    that ending carries the same whole second as the pod's creation. It is the pod's own ending, not an earlier
    pod's, so no restart is counted; an Event of that second with another code is an earlier pod's and is."""
    from kubernetes.client import CoreV1EventList, V1PodList

    from trainer.cluster.client import KINDS
    from trainer.cluster.jobs import JobView
    from trainer.commands.status import render

    second = "2026-12-06T08:00:10Z"
    pods = V1PodList.from_dict({"items": [{
        "metadata": {"name": "demo-master-0", "creationTimestamp": second, "labels": {
            "training.kubeflow.org/replica-type": "master", "training.kubeflow.org/replica-index": "0"}},
        "status": {"phase": "Failed", "containerStatuses": [{
            "name": "pytorch", "image": "t", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 2, "reason": "Error", "finishedAt": second,
                                     "message": "lora_rank must be positive"}}}]}}]}).items

    def exited(code: int, name: str) -> dict:
        return {"metadata": {"name": name}, "involvedObject": {"kind": "PyTorchJob", "name": "demo"},
                "reason": "ExitedWithCode", "message": f"Pod: team.demo-master-0 exited with code {code}",
                "source": {"component": "pytorchjob-controller"}, "lastTimestamp": second}

    job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PyTorchJobFailed"}]}}
    own = CoreV1EventList.from_dict({"items": [exited(2, "demo.a")]}).items
    text = render(JobView(KINDS["PyTorchJob"], job, pods, None, own, None), "demo", "team")
    assert "  master-0 demo-master-0: Failed, 0 restarts; last exit 2 (configuration error" in text
    assert "recreated" not in text

    both = CoreV1EventList.from_dict({"items": [exited(137, "demo.b"), exited(2, "demo.a")]}).items
    text = render(JobView(KINDS["PyTorchJob"], job, pods, None, both, None), "demo", "team")
    assert ("  master-0 demo-master-0: Failed, 1 restarts; recreated by the operator after exit 137 (killed by "
            "signal 9); last exit 2") in text
