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
