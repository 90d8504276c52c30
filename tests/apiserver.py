"""A real Kubernetes API server for tests: etcd and apiextensions-apiserver (installed by
scripts/ci/install_apiserver.sh) on 127.0.0.1 ports, serving the Kubeflow PyTorchJob and TrainJob CRDs.

It serves custom resources and their status subresource, not Pods or Events. Clients authenticate with
client certificates: `admin` is in system:masters (allowed everything without asking), `viewer` is not, and
every question the server asks about it goes to a local authorization webhook that refuses all: the
"no permission" case, answered by the server's real authorization path.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.tooling import REPO, in_ci, missing

SERVER_BIN = REPO / ".cache" / "apiserver" / "bin" / "apiextensions-apiserver"
CRD_FILES = ("kubeflow.org_pytorchjobs.yaml", "trainer.kubeflow.org_trainjobs.yaml")


def crds_dir() -> Path:
    """`KUBEFLOW_CRDS_DIR`, else ../shared/crds; missing: fail under CI, skip elsewhere."""
    path = Path(os.environ.get("KUBEFLOW_CRDS_DIR") or REPO.parent / "shared" / "crds")
    if not all((path / f).is_file() for f in CRD_FILES):
        missing(f"the Kubeflow CRDs ({', '.join(CRD_FILES)}) in {path}",
                "the repository does not carry them and no script installs them: put the two files from the "
                "Kubeflow training operator's and Kubeflow Trainer's releases in a directory and set "
                "KUBEFLOW_CRDS_DIR to it")
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _certs(d: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    for user, subject in (("admin", "/O=system:masters/CN=admin"), ("viewer", "/CN=viewer")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(d / f"{user}.key"),
                 "-out", str(d / f"{user}.csr"))
        _openssl("x509", "-req", "-in", str(d / f"{user}.csr"), "-CA", str(d / "ca.crt"), "-CAkey",
                 str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(d / f"{user}.crt"))


def _kubeconfig(path: Path, server: str, cert_dir: Path | None, user: str, namespace: str,
                ca: Path | None = None) -> Path:
    cluster = {"server": server, **({"certificate-authority": str(ca)} if ca else {})}
    user_entry = {"client-certificate": str(cert_dir / f"{user}.crt"), "client-key": str(cert_dir / f"{user}.key")} \
        if cert_dir else {}
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "test", "user": user_entry}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
    }))
    return path


@contextmanager
def _refusing_webhook() -> Iterator[str]:
    """An authorization webhook that refuses every SubjectAccessReview; its URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            body["status"] = {"allowed": False, "reason": "the test cluster refuses this user"}
            self._reply(201, body)

        def do_GET(self) -> None:
            self._reply(404, {"kind": "Status", "code": 404})

        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class APIServer:
    url: str
    dir: Path

    def kubeconfig(self, user: str = "admin", namespace: str = "team") -> Path:
        return _kubeconfig(self.dir / f"{user}-{namespace}.kubeconfig", self.url, self.dir / "certs", user,
                           namespace, ca=self.dir / "serving" / "apiserver.crt")

    def client(self):  # a kubernetes ApiClient as admin
        from trainer.cluster.client import api_client

        return api_client({"KUBECONFIG": str(self.kubeconfig())})[0]


def _wait(what: str, check, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up in {timeout:g} s; {log}:\n{log.read_text()[-3000:]}")


@contextmanager
def api_server(workdir: Path) -> Iterator[APIServer]:
    etcd = shutil.which("etcd")
    if etcd is None or not SERVER_BIN.is_file() or shutil.which("openssl") is None:
        missing("etcd, openssl or apiextensions-apiserver",
                "scripts/ci/install_apiserver.sh installs them (a Go build; the full scripts/test.sh runs it, "
                "scripts/test.sh -m \"not slow\" does not select these tests)")
    crds = crds_dir()
    certs = workdir / "certs"
    certs.mkdir(parents=True)
    _certs(certs)
    etcd_port, peer_port, port = _port(), _port(), _port()
    procs: list[subprocess.Popen[bytes]] = []
    with _refusing_webhook() as webhook:
        hook = _kubeconfig(workdir / "webhook.kubeconfig", webhook, None, "", "default")
        try:
            etcd_log = workdir / "etcd.log"
            procs.append(subprocess.Popen(
                [etcd, "--data-dir", str(workdir / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                 "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer_port}"],
                stdout=etcd_log.open("w"), stderr=subprocess.STDOUT))
            log = workdir / "apiserver.log"
            procs.append(subprocess.Popen(
                [str(SERVER_BIN), "--etcd-servers", f"http://127.0.0.1:{etcd_port}", "--bind-address", "127.0.0.1",
                 "--secure-port", str(port), "--cert-dir", str(workdir / "serving"),
                 "--client-ca-file", str(certs / "ca.crt"), "--kubeconfig", str(hook),
                 "--authentication-kubeconfig", str(hook), "--authorization-kubeconfig", str(hook),
                 "--authentication-skip-lookup",
                 # They watch namespaces and webhook objects of a core API server, which this one lacks.
                 "--disable-admission-plugins", "NamespaceLifecycle,MutatingAdmissionPolicy,MutatingAdmissionWebhook,"
                 "ValidatingAdmissionPolicy,ValidatingAdmissionWebhook"],
                stdout=log.open("w"), stderr=subprocess.STDOUT))
            server = APIServer(f"https://127.0.0.1:{port}", workdir)
            _wait("the serving certificate", (workdir / "serving" / "apiserver.crt").is_file, 60, log)
            from kubernetes import client

            api = server.client()
            ext = client.ApiextensionsV1Api(api)
            _wait("apiextensions-apiserver",
                  lambda: ext.list_custom_resource_definition(_request_timeout=2) is not None,
                  120 if in_ci() else 60, log)
            for name in CRD_FILES:  # "not yet ready to handle request" for a moment after it answers
                body = yaml.safe_load((crds / name).read_text())
                _wait(f"creating {name}", lambda body=body: ext.create_custom_resource_definition(body), 60, log)
            custom = client.CustomObjectsApi(api)
            _wait("the PyTorchJob and TrainJob resources", lambda: all(
                custom.list_namespaced_custom_object(g, v, "team", p, _request_timeout=2) is not None
                for g, v, p in (("kubeflow.org", "v1", "pytorchjobs"),
                                ("trainer.kubeflow.org", "v1alpha1", "trainjobs"))), 60, log)
            yield server
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
