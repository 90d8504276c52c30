"""`higgs-audio-trainer status` against what the real control plane holds: the conditions the real training
operator writes on a suspended job and then through its run (read with `--watch` until it ends), and the
errors of a real API server under real RBAC. The conditions no run here can produce (a TrainJob's: Trainer
v2 needs JobSet, the Job controller and Kubernetes 1.31) stay hand-written in
tests/trainer/commands/test_status.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cluster.cluster import Release
from trainer import errors

pytestmark = pytest.mark.slow


def test_status_shows_a_suspended_job_and_watch_follows_it_to_success(release: Release) -> None:
    release.install({"workers": 0, "runPolicy": {"suspend": True}, "trainer": {"max_steps": 10, "save_steps": 10}})
    release.wait_condition("Suspended", timeout=120)
    shown = release.status()
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"PyTorchJob {release.ns}/demo: running\n")
    assert "  Suspended=True" in shown.stdout and "pods: 0" in shown.stdout
    assert shown.stdout.rstrip().endswith("next: suspended: no pods until the job is resumed")

    resume = threading.Timer(2.0, release.cluster.custom.patch_namespaced_custom_object,
                             ("kubeflow.org", "v1", release.ns, "pytorchjobs", "demo",
                              {"spec": {"runPolicy": {"suspend": False}}}))
    resume.start()
    try:
        watched = release.status("--watch", "--interval", "1", timeout=600)
    finally:
        resume.join()
    assert watched.returncode == 0, watched.stderr
    reads = [r for r in watched.stdout.split("\n\n") if r.strip()]  # --watch prints each change once
    assert reads[0].rstrip().endswith("next: suspended: no pods until the job is resumed")
    assert reads[-1].startswith(f"PyTorchJob {release.ns}/demo: succeeded\n")
    assert "next: done: succeeded; the result is in /output/demo/lora_adapters" in reads[-1]
    assert any("  Running=True" in r for r in reads[1:-1]), watched.stdout
    assert len(set(reads)) == len(reads)


def kubeconfig_for(release: Release, path: Path, token: str) -> Path:
    """A kubeconfig that speaks to the real API server as a ServiceAccount with this token."""
    plane = release.cluster.plane
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "plane", "cluster": {"server": f"https://127.0.0.1:{plane.api_port}",
                                                   "certificate-authority": str(plane.ca_file)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "plane", "user": "sa", "namespace": release.ns}}]}))
    return path


def test_a_missing_job_and_a_refused_read_are_one_line_and_exit_code_2(release: Release) -> None:
    missing = release.status()  # nothing installed: no job named demo
    assert (missing.returncode, missing.stdout) == (errors.CONFIG_ERROR, "")
    assert missing.stderr.startswith(f"higgs-audio-trainer status: no PyTorchJob or TrainJob named 'demo' in "
                                     f"namespace '{release.ns}' on https://127.0.0.1:"), missing.stderr
    assert missing.stderr.count("\n") == 1

    # a ServiceAccount that no Role grants anything: the API server's RBAC refuses the read
    core = release.cluster.core
    core.create_namespaced_service_account(release.ns, {"metadata": {"name": "viewer"}})
    token = core.create_namespaced_service_account_token(
        "viewer", release.ns, {"spec": {"audiences": [], "expirationSeconds": 600}}).status.token
    release.install({"workers": 0, "runPolicy": {"suspend": True}})
    env = {**release.environ, "KUBECONFIG": str(kubeconfig_for(release, release.tmp / "viewer.json", token))}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    refused = subprocess.run([sys.executable, "-m", "trainer", "status", "demo"], env=env, capture_output=True,
                             text=True, timeout=120)  # the namespace from the kubeconfig's context
    assert (refused.returncode, refused.stdout) == (errors.CONFIG_ERROR, ""), refused.stdout
    assert refused.stderr.startswith(f"higgs-audio-trainer status: no permission to get pytorchjobs.kubeflow.org "
                                     f"{release.ns}/demo on https://127.0.0.1:"), refused.stderr
    assert "403 Forbidden" in refused.stderr and refused.stderr.count("\n") == 1


def test_states_the_operator_passes_through_at_once_written_by_hand_on_a_job_it_leaves_alone(
        release: Release) -> None:
    """A job the operator has not seen yet, and Restarting (the operator recreates the pod at once and sets
    Running again), last milliseconds on a run. They are written here through the real status subresource on
    a job with `spec.runPolicy.managedBy: kueue.x-k8s.io/multikueue`, which the real operator does not
    reconcile (the CRD's own description), so what `status` reads is what was written."""
    custom = release.cluster.custom
    pod = {"containers": [{"name": "pytorch", "image": "trainer:test"}]}
    custom.create_namespaced_custom_object("kubeflow.org", "v1", release.ns, "pytorchjobs", {
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "demo"},
        "spec": {"runPolicy": {"managedBy": "kueue.x-k8s.io/multikueue"}, "pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": {"spec": pod}}}}})
    shown = release.status()
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"PyTorchJob {release.ns}/demo: running\n  no conditions yet")
    assert "pods: 0" in shown.stdout and "next: waiting: the job has no running pods yet" in shown.stdout

    job = release.job()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    written = [("Created", "True", "PyTorchJobCreated", "PyTorchJob demo is created."),
               ("Running", "False", "PyTorchJobRunning", f"PyTorchJob {release.ns}/demo is running."),
               ("Restarting", "True", "PyTorchJobRestarting",
                "PyTorchJob demo is restarting because 1 Master replica(s) failed.")]
    job["status"] = {"replicaStatuses": {}, "conditions": [
        {"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": now} for t, s, r, m in written]}
    custom.replace_namespaced_custom_object_status("kubeflow.org", "v1", release.ns, "pytorchjobs", "demo", job)
    time.sleep(3)  # time for the operator to overwrite it, were it to reconcile the job
    assert [(c["type"], c["status"]) for c in release.conditions().values()] == [w[:2] for w in written]
    assert release.pods() == []
    out = release.status().stdout
    assert "  Created=True (PyTorchJobCreated: PyTorchJob demo is created.)" in out
    assert "  Running=False since" in out and "is running." not in out and "  Restarting=True" in out
    assert "next: restarting; the operator restarts it and it starts again from the beginning" in out
