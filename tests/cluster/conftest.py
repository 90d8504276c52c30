"""Fixtures of the cluster tier: one real control plane and one node agent per session, a namespace per test,
and the chart installed into it with `helm install` (docs/development.md, "The cluster tier")."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.cluster import Cluster, Release
from tests.cluster.controlplane import cluster_dir, control_plane
from tests.cluster.node_agent import NodeAgent, python_bin_dir
from tests.conftest import DEMO_DATA
from tests.tooling import REPO, require_tool

HELM_DIR = REPO / ".cache" / "tools" / "bin"


@pytest.fixture(scope="session")
def cluster(tiny_ckpt: tuple[Path, Path]) -> Iterator[Cluster]:
    """The control plane (`control-plane.sh up`) and a node agent running its pods; torn down at the end."""
    cluster_dir()
    helm = require_tool("helm4", HELM_DIR)
    state = Path(tempfile.mkdtemp(prefix="control-plane-"))
    agent_root = Path(tempfile.mkdtemp(prefix="node-agent-"))
    agent_root.chmod(0o711)  # the pods' users reach their termination logs below it
    try:
        with control_plane(state) as plane:
            agent = NodeAgent(plane.api(), agent_root, api_port=plane.api_port, ca_file=plane.ca_file,
                              bin_dir=python_bin_dir()).start()
            try:
                yield Cluster(plane, agent, helm, tiny_ckpt)
            finally:
                agent.stop()
    finally:
        shutil.rmtree(agent_root, ignore_errors=True)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace with the tiny model and the demo data on its `higgs-audio-models` and
    `higgs-audio-data` claims; its pods are stopped afterwards."""
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace({"metadata": {"name": ns}})
    # The controller-manager's service account controller gives every namespace this one (`helm test`'s pod
    # names no other); none runs here.
    cluster.core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
    model, codec = cluster.tiny
    models = cluster.agent.claim_dir(ns, "higgs-audio-models")
    shutil.copytree(model, models / "model")
    shutil.copytree(codec, models / "audio_tokenizer")
    shutil.copytree(DEMO_DATA.parent, cluster.agent.claim_dir(ns, "higgs-audio-data"), dirs_exist_ok=True)
    yield ns
    # No garbage collector or namespace controller runs here: the jobs go first (so the operator creates no
    # more pods), then the pods (the agent stops their processes), then the namespace, which stays Terminating.
    for job in cluster.custom.list_namespaced_custom_object("kubeflow.org", "v1", ns, "pytorchjobs")["items"]:
        cluster.custom.delete_namespaced_custom_object("kubeflow.org", "v1", ns, "pytorchjobs",
                                                       job["metadata"]["name"])
    cluster.core.delete_collection_namespaced_pod(ns, grace_period_seconds=2)
    for run in [r for r in list(cluster.agent.runs.values()) if r.ns == ns]:
        run.stop(2)
    cluster.core.delete_namespace(ns)


@pytest.fixture
def release(cluster: Cluster, namespace: str, tmp_path: Path) -> Release:
    return Release(cluster, namespace, "demo", tmp_path, os.environ.copy())
