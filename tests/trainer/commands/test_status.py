"""`higgs-audio-trainer status` on a TrainJob whose status is written by hand through the status subresource of
a real API server (etcd + apiextensions-apiserver serving the Kubeflow CRDs, tests/apiserver.py): the real
control plane of tests/cluster/ cannot run Trainer v2 (it needs JobSet, the Job controller and Kubernetes
1.31) and serves no TrainJob CRD. Everything else `status` reads is there, on the real kube-apiserver and
training operator (tests/cluster/test_status.py, test_training_jobs.py); an unreachable server is in
test_status_errors.py, and Pods and Events in recorded shapes in test_status_render.py.

Slow: the server is a Go build (scripts/ci/install_apiserver.sh) that the fast tier does not install."""

from __future__ import annotations

import time

import pytest

from tests.apiserver import api_server
from trainer.__main__ import main

pytestmark = pytest.mark.slow

TRAINJOBS = ("trainer.kubeflow.org", "v1alpha1", "team", "trainjobs")


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


def set_conditions(custom, name: str, *conditions: tuple[str, str, str]) -> None:
    """Write a TrainJob's status.conditions as its controller does: the newest True, those before it False."""
    job = custom.get_namespaced_custom_object(*TRAINJOBS, name)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    job["status"] = {"conditions": [
        {"type": t, "status": "True" if i == len(conditions) - 1 else "False", "reason": r, "message": m,
         "lastTransitionTime": now}
        for i, (t, r, m) in enumerate(conditions)]}
    custom.replace_namespaced_custom_object_status(*TRAINJOBS, name, job)


def status(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["status", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_status_finds_a_trainjob(custom, capsys) -> None:
    custom.create_namespaced_custom_object(*TRAINJOBS, {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "tj"},
        "spec": {"runtimeRef": {"name": "torch-distributed"}}})
    set_conditions(custom, "tj", ("Complete", "JobsCompleted", "TrainJob is completed"))
    code, out, _ = status(capsys, "tj", "-n", "team")
    assert code == 0 and out.startswith("TrainJob team/tj: succeeded")
    assert status(capsys, "tj", "--wait")[0] == 0
