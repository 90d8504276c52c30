"""A small local HTTP server speaking the two calls of the Kubernetes API that `trainer.cluster.events`
makes (get the job, create an Event), for tests. The real apiextensions-apiserver the status tests run on
does not serve core Events, so this one stands in for it and keeps every request it was sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

JOB_UID = "6c1f5a0e-0000-4000-8000-000000000001"


class EventsAPI:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.requests: list[tuple[str, str]] = []
        self.events: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.events]


def kubeconfig(path: Path, server: str, namespace: str = "team") -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {"token": "test-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
    }))
    return path


@contextmanager
def events_api(job: str = "demo", namespace: str = "team", kind_path: str = "apis/kubeflow.org/v1",
               plural: str = "pytorchjobs") -> Iterator[EventsAPI]:
    api: EventsAPI

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            api.requests.append(("GET", self.path))
            if self.path.split("?")[0] == f"/{kind_path}/namespaces/{namespace}/{plural}/{job}":
                self._reply(200, {"apiVersion": kind_path[5:], "kind": "PyTorchJob",
                                  "metadata": {"name": job, "namespace": namespace, "uid": JOB_UID}})
            else:
                self._reply(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})

        def do_POST(self) -> None:
            api.requests.append(("POST", self.path))
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path.split("?")[0] != f"/api/v1/namespaces/{namespace}/events":
                self._reply(404, {"kind": "Status", "code": 404})
                return
            body["metadata"]["name"] = body["metadata"]["generateName"] + str(len(api.events))
            api.events.append(body)
            self._reply(201, body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api = EventsAPI(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
