"""The real control plane of ../shared/cluster (etcd, kube-apiserver v1.28.0, the Kubeflow training operator
v1.9.4 and its webhook) started once per test session with its own `control-plane.sh`.

Where it comes from: `CLUSTER_DIR` names the directory holding `control-plane.sh`, else ../shared/cluster
beside the repository. A missing directory, binary or tool (root, etcd, kubectl, openssl, xz, unshare) skips
the tier with one line saying what is missing, and fails it under CI (tests/tooling.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.tooling import REPO, missing

TOOLS = ("etcd", "kubectl", "openssl", "xz", "unshare", "curl", "getent")


def cluster_dir() -> Path:
    """`CLUSTER_DIR`, else ../shared/cluster; skip (fail under CI) with what is missing."""
    path = Path(os.environ.get("CLUSTER_DIR") or REPO.parent / "shared" / "cluster")
    wanted = [path / "control-plane.sh", path / "bin" / "kube-apiserver.xz", path / "bin" / "training-operator.xz"]
    absent = [str(p) for p in wanted if not p.is_file()]
    if absent:
        missing(f"the control plane ({', '.join(absent)}; set CLUSTER_DIR to the directory of control-plane.sh)")
    if os.geteuid() != 0:
        missing("root (the control plane and the node agent use private mount namespaces)")
    tools = [t for t in TOOLS if shutil.which(t) is None]
    if tools:
        missing(f"the tools {', '.join(tools)} (scripts/test.sh installs them with the tier)")
    return path


def free_port_base() -> int:
    """A PORT_BASE whose eight ports (base + 80, 81, 379, 380, 443, 543) are free now, so that two sessions on
    one machine do not meet."""
    for base in range(21000, 60000, 1000):
        try:
            for offset in (80, 81, 379, 380, 443, 543):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no free PORT_BASE between 21000 and 60000")


@dataclass(frozen=True)
class ControlPlane:
    """A running control plane: its state directory, admin kubeconfig and API address."""

    state: Path
    port_base: int

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.state / "pki" / "ca.crt"

    @property
    def api_port(self) -> int:
        return self.port_base + 443

    def api(self):  # an admin kubernetes ApiClient
        from trainer.cluster.client import api_client

        return api_client({"KUBECONFIG": str(self.kubeconfig)})[0]

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.state / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else f"(no {path})"


@contextmanager
def control_plane(state: Path) -> Iterator[ControlPlane]:
    """`control-plane.sh up STATE` now, `clean STATE` at the end, whatever happens between."""
    script = cluster_dir() / "control-plane.sh"
    base = free_port_base()
    env = {**os.environ, "PORT_BASE": str(base)}
    try:
        for tries in range(3):
            # `kubectl wait --for=condition=Established` in the script fails at once when it asks before the
            # CRD has any status ("<nil> is of the type <nil>"): a race of the script, so `up` is tried again.
            up = subprocess.run(["bash", str(script), "up", str(state)], env=env, capture_output=True, text=True,
                                timeout=300)
            if up.returncode == 0:
                break
            subprocess.run(["bash", str(script), "down", str(state)], env=env, capture_output=True, timeout=120)
            if tries == 2:
                raise RuntimeError(f"control-plane.sh up failed ({up.returncode}):\n{up.stdout[-2000:]}"
                                   f"{up.stderr[-2000:]}")
        yield ControlPlane(state, base)
    finally:
        subprocess.run(["bash", str(script), "down", str(state)], env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)

