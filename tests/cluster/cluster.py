"""What a cluster test works with: the running control plane and node agent, and one Helm release of the
chart in a test's namespace (install, `helm test`, waiting for the operator's conditions, reading back what
the API server recorded)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane
from tests.cluster.node_agent import NodeAgent
from tests.tooling import REPO

CHART = REPO / "charts" / "higgs-audio-trainer"
T = TypeVar("T")

# A LoRA run of the tiny model on the demo data, small enough for two CPU pods (the tests override parts).
TINY_VALUES: dict[str, Any] = {
    "gpu": {"count": 0},
    "workers": 1,
    "nprocPerNode": "1",
    "terminationGracePeriodSeconds": 30,
    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
    "storage": {"output": {"accessModes": ["ReadWriteMany"]}, "shm": {"sizeLimit": "2Gi"},
                "tmp": {"sizeLimit": "2Gi"}},
    "metrics": {"pushgateway": {"create": False}, "dashboard": {"enabled": False}},
    "trainer": {"model_path": "/models/model", "audio_tokenizer_path": "/models/audio_tokenizer",
                "train_data_file": "/data/train.json", "use_lora": True, "disable_eval": True,
                "max_steps": 20, "save_steps": 10, "logging_steps": 5, "learning_rate": 0.005,
                "warmup_steps": 0, "dataloader_num_workers": 0, "seed": 1},
}


def merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class Cluster:
    plane: ControlPlane
    agent: NodeAgent
    helm: str
    tiny: tuple[Path, Path]

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.agent.api)

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.agent.api)


@dataclass
class Release:
    cluster: Cluster
    ns: str
    name: str
    tmp: Path
    environ: dict[str, str]

    # ---- helm ------------------------------------------------------------------------------------------
    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.cluster.helm, *args, "-n", self.ns, "--kubeconfig",
                               str(self.cluster.plane.kubeconfig)], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return proc

    def install(self, values: dict | None = None) -> None:
        path = self.tmp / f"values-{self.name}.yaml"
        path.write_text(yaml.safe_dump(merged(TINY_VALUES, values or {})))
        self.helm("install", self.name, str(CHART), "-f", str(path))

    # ---- what the API server holds ------------------------------------------------------------------------
    def job(self) -> dict:
        return self.cluster.custom.get_namespaced_custom_object("kubeflow.org", "v1", self.ns, "pytorchjobs",
                                                                self.name)

    def conditions(self) -> dict[str, dict]:
        """The job's conditions by type."""
        return {c["type"]: c for c in (self.job().get("status") or {}).get("conditions") or []}

    def pods(self) -> list[Any]:
        return self.cluster.core.list_namespaced_pod(
            self.ns, label_selector=f"training.kubeflow.org/job-name={self.name}").items

    def events(self, **match: str) -> list[Any]:
        """Events of the namespace, oldest first, whose fields (reason, type, ...) equal `match`."""
        found = self.cluster.core.list_namespaced_event(self.ns).items
        found = [e for e in found if all(getattr(e, k) == v for k, v in match.items())]
        return sorted(found, key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp))

    def output(self) -> Path:
        """The output claim's directory on the node, and in it the job's OUTPUT_DIR."""
        claim = f"{self.name}-higgs-audio-trainer-output"
        return self.cluster.agent.claim_dir(self.ns, claim) / self.name

    # ---- waiting --------------------------------------------------------------------------------------------
    def wait_for(self, check: Callable[[], T], what: str, timeout: float = 600, interval: float = 1.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"gave up waiting for {what} after {timeout:g} s; conditions "
                            f"{[(c['type'], c['status']) for c in self.conditions().values()]}\n"
                            f"{self.cluster.agent.logs(self.ns)}\noperator log:\n"
                            f"{self.cluster.plane.log_tail('operator', 1500)}")
            time.sleep(interval)

    def wait_condition(self, kind: str, timeout: float = 600) -> dict:
        """Wait until the job's condition `kind` (Succeeded, Failed, Restarting, ...) is True; return it."""
        return self.wait_for(lambda: (c := self.conditions().get(kind)) and c["status"] == "True" and c,
                             f"the PyTorchJob's condition {kind}", timeout)

    def status(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`higgs-audio-trainer status NAME -n NS ARGS` from a workstation: the admin kubeconfig."""
        env = {**self.environ, "KUBECONFIG": str(self.cluster.plane.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        return subprocess.run([sys.executable, "-m", "trainer", "status", self.name, "-n", self.ns, *args],
                              env=env, capture_output=True, text=True, timeout=timeout)
