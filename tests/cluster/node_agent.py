"""A test-side node agent: the one part of a cluster that cannot run here (a kubelet and a container runtime),
replaced by local processes, so that the real operator's pods really train.

It registers a Node, binds every pod the API server holds to it (there is no scheduler), and runs each pod:
its init containers one after the other, then its one container, each as a local process in private
namespaces (`unshare`): mount (the pod's volumes bound at their mountPath, an /etc/hosts naming every
Service of the namespace and the pod itself as 127.0.0.1), UTS (the pod's hostname) and PID (the container's
command is PID 1, so a SIGKILL to it ends every process of the pod, as a container's end does). The
environment is the pod's: `value` with `$(VAR)` expansion, `valueFrom` field, Secret and ConfigMap
references, `envFrom`; `KUBERNETES_SERVICE_HOST`/`PORT` point at the real API server, and the
ServiceAccount token of the pod's projected volume is minted with the TokenRequest API (bound to the pod),
so the trainer's kubernetes client talks to the API server as the pod's service account under real RBAC.
The operator's worker init container waits with `nslookup` for the Master's name: run here by `getent`,
through the libc resolver (so /etc/hosts) as the busybox of the operator's alpine 3.10 image does.

What a kubelet does and this does not: images (the container's command runs with the checkout's venv first
on PATH, standing in for the image, whose ENTRYPOINT and CMD are `higgs-audio-trainer launch` / `train`),
resource limits, probes, the security context's user (the processes run as root: the checkout's venv
need not be readable by uid 1000; fsGroup is applied to writable volumes), restarts in place (the
operator's pods are `restartPolicy: Never`). The
termination message is read from the file `TERMINATION_LOG` names (the launcher's documented override, a
file bound into the container): /dev/termination-log cannot be made per pod without a container runtime.

A claim is a directory per claim (`ROOT/claims/NAMESPACE/CLAIM`); tests fill it before the install and read it
after. Status goes through `pods/status` as a kubelet's does; a deleted pod's processes get SIGTERM, then
SIGKILL after its grace period, and the pod object is then removed (grace period 0), as a kubelet does.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from tests.cluster.pod_run import NODE, PodRun, now


class NodeAgent:
    """Binds and runs every pod of the API server on one Node until `stop`.

    Args:
        api: an admin `kubernetes.client.ApiClient`.
        root: the agent's directory (claims, pods' volumes, logs).
        api_port: the API server's port on 127.0.0.1 (`KUBERNETES_SERVICE_PORT` of the pods).
        ca_file: the API server's CA, published as each namespace's `kube-root-ca.crt` ConfigMap (the
            controller-manager's root CA publisher does this in a cluster).
        bin_dir: directory first on the pods' PATH (the checkout's venv: the image's `higgs-audio-trainer`).
    """

    def __init__(self, api: Any, root: Path, *, api_port: int, ca_file: Path, bin_dir: Path) -> None:
        from kubernetes import client

        self.api, self.root, self.api_port, self.ca = api, root, api_port, ca_file.read_text()
        self.bin_dir = bin_dir
        self.core = client.CoreV1Api(api)
        self.runs: dict[str, PodRun] = {}  # by pod uid
        self.created_dirs: list[Path] = []
        self.published: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="node-agent", daemon=True)
        self.errors: list[str] = []
        self.tools_dir = root / "bin"  # what the operator's init container image has: nslookup

    # ---- the loop ---------------------------------------------------------------------------------------
    def start(self) -> NodeAgent:
        from kubernetes import client

        self.root.mkdir(parents=True, exist_ok=True)
        self.tools_dir.mkdir(exist_ok=True)
        # The operator's init image (alpine 3.10) has busybox 1.30, whose nslookup resolves through the libc
        # resolver (getaddrinfo: /etc/hosts, then the name server), as `getent` does.
        nslookup = self.tools_dir / "nslookup"
        nslookup.write_text('#!/bin/sh\nexec getent ahostsv4 "$1"\n')
        nslookup.chmod(0o755)
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {
            "kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}},
            "status": {"capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                       "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"}}}
        try:
            self.core.create_node(node)
        except client.exceptions.ApiException as err:
            if err.status != 409:
                raise
        self.core.patch_node_status(NODE, {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "NodeAgentReady",
                            "message": "test node agent", "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}]}})
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for run in list(self.runs.values()):
            run.stop(5)
        for path in reversed(self.created_dirs):  # the mount points this agent made on the host
            with contextlib.suppress(OSError):
                path.rmdir()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as exc:  # an API hiccup: the next tick retries
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.3)

    def _tick(self) -> None:
        from kubernetes import client

        pods = self.core.list_pod_for_all_namespaces(_request_timeout=10).items
        seen = set()
        for pod in pods:
            uid, meta = pod.metadata.uid, pod.metadata
            seen.add(uid)
            if meta.deletion_timestamp is not None:
                self._delete(pod)
            elif not pod.spec.node_name:
                self._publish_ca(meta.namespace)
                try:
                    self.core.create_namespaced_pod_binding(meta.name, meta.namespace, {
                        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta.name, "uid": uid},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}}, _preload_content=False)
                except client.exceptions.ApiException as err:
                    if err.status not in (404, 409):
                        raise
            elif pod.spec.node_name == NODE and uid not in self.runs and pod.status.phase == "Pending":
                self._publish_ca(meta.namespace)
                run = PodRun(self, pod)
                self.runs[uid] = run
                run.start()
        for uid in [u for u in self.runs if u not in seen]:  # removed without a grace period
            run = self.runs.pop(uid)
            threading.Thread(target=run.stop, args=(0,), daemon=True).start()

    def _delete(self, pod: Any) -> None:
        uid = pod.metadata.uid
        run = self.runs.get(uid)
        if run is not None and not run.stopping.is_set():
            grace = pod.metadata.deletion_grace_period_seconds
            if grace is None:
                grace = pod.spec.termination_grace_period_seconds or 30

            def finish() -> None:
                run.stop(float(grace))
                run.done.wait(30)
                self._remove(pod)

            run.stopping.set()
            threading.Thread(target=finish, daemon=True).start()
        elif run is None or run.done.is_set():
            self._remove(pod)

    def _remove(self, pod: Any) -> None:
        from kubernetes import client

        try:
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0,
                                            body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                        preconditions={"uid": pod.metadata.uid}))
        except client.exceptions.ApiException as err:
            if err.status not in (404, 409):
                raise
        self.runs.pop(pod.metadata.uid, None)

    # ---- what pods need from the API and the host ---------------------------------------------------------
    def patch_status(self, ns: str, name: str, uid: str, status: dict) -> None:
        from kubernetes import client

        try:
            self.core.patch_namespaced_pod_status(name, ns, {"metadata": {"uid": uid}, "status": status})
        except client.exceptions.ApiException as err:
            if err.status not in (404, 409, 422):
                raise

    def _publish_ca(self, ns: str) -> None:
        from kubernetes import client

        if ns in self.published:
            return
        try:
            self.core.create_namespaced_config_map(ns, {"metadata": {"name": "kube-root-ca.crt"},
                                                        "data": {"ca.crt": self.ca}})
        except client.exceptions.ApiException as err:
            if err.status != 409:
                raise
        self.published.add(ns)

    def token(self, ns: str, pod: Any, source: Any) -> str:
        """A token of the pod's service account, bound to the pod, from the TokenRequest API."""
        spec: dict[str, Any] = {"expirationSeconds": source.expiration_seconds or 3600,
                                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                                                   "uid": pod.metadata.uid}}
        if source.audience:
            spec["audiences"] = [source.audience]
        made = self.core.create_namespaced_service_account_token(
            pod.spec.service_account_name or "default", ns, {"spec": spec})
        return made.status.token

    def secret(self, ns: str, name: str, optional: bool | None = False) -> dict[str, str]:
        from kubernetes import client

        try:
            data = self.core.read_namespaced_secret(name, ns).data or {}
        except client.exceptions.ApiException as err:
            if err.status == 404 and optional:
                return {}
            raise
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def config_map(self, ns: str, name: str, optional: bool | None = False) -> dict[str, str]:
        from kubernetes import client

        try:
            return dict(self.core.read_namespaced_config_map(name, ns).data or {})
        except client.exceptions.ApiException as err:
            if err.status == 404 and optional:
                return {}
            raise

    def hosts_text(self, ns: str, pod: Any) -> str:
        """/etc/hosts of a pod: the host's, then every Service of its namespace and the pod as 127.0.0.1."""
        names = [s.metadata.name for s in self.core.list_namespaced_service(ns).items]
        lines = [Path("/etc/hosts").read_text().rstrip("\n"), f"127.0.0.1 {pod.metadata.name}"]
        lines += [f"127.0.0.1 {n} {n}.{ns} {n}.{ns}.svc {n}.{ns}.svc.cluster.local" for n in names]
        return "\n".join(lines) + "\n"

    def claim_dir(self, ns: str, claim: str) -> Path:
        path = self.root / "claims" / ns / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mount_point(self, path: str) -> str:
        """`path` as a directory on the host (created, and removed at `stop`, where it was missing)."""
        real = Path(os.path.realpath(path))
        with self._lock:
            missing = []
            p = real
            while not p.exists():
                missing.append(p)
                p = p.parent
            for d in reversed(missing):
                d.mkdir(exist_ok=True)
                self.created_dirs.append(d)
        return str(real)

    @staticmethod
    def own_group(path: Path, gid: int) -> None:
        """fsGroup: the volume's root belongs to the group and is group-writable (setgid), as a kubelet makes it.
        A volume that refuses it (read-only, immutable) is mounted as it is: the pod's own checks find it."""
        with contextlib.suppress(OSError):
            os.chown(path, -1, gid)
            path.chmod(0o2775)

    # ---- for tests --------------------------------------------------------------------------------------
    def run_of(self, ns: str, name: str) -> PodRun | None:
        """The newest run of pod `name`."""
        found = [r for r in self.runs.values() if r.ns == ns and r.name == name]
        return found[-1] if found else None

    def logs(self, ns: str) -> str:
        """Every container log of the namespace's pods, for a failing test's message."""
        parts = []
        for d in sorted((self.root / "pods").glob(f"{ns}_*")):
            for f in sorted(d.glob("*.log")):
                parts.append(f"--- {d.name}/{f.name}\n{f.read_text(errors='replace')[-2500:]}")
        return "\n".join(parts)


def python_bin_dir() -> Path:
    """The venv's bin directory, which holds `higgs-audio-trainer`."""
    return Path(sys.executable).parent
