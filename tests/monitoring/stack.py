"""Real Prometheus and Pushgateway processes for tests, on free 127.0.0.1 ports in temporary folders.

The binaries come from Debian's `prometheus` and `prometheus-pushgateway` packages
(scripts/ci/install_monitoring_tools.sh). Every process listens on loopback only, keeps its data in the
test's folder, and is stopped by the fixture that started it, so tests can run side by side.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.tooling import require_tool

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "higgs-audio-trainer" / "files" / "prometheus-rules.yaml"
DASHBOARD = REPO / "charts" / "higgs-audio-trainer" / "files" / "grafana-dashboard.json"
LOOPBACK = "127.0.0.1"
SCRAPE_SECONDS = 0.5
# Instant queries look this far back, so that alert expressions can be evaluated at a later time
# ("no push for 15 minutes") against the samples of a run that has just ended.
LOOKBACK = "4h"


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the kernel picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


class Service:
    """One server process: started on a free port, ready when `ready_path` answers, stopped on `stop`."""

    ready_path = "/-/ready"

    def __init__(self, argv: Callable[[int], list[str]], workdir: Path, name: str) -> None:
        self.workdir, self.name = workdir, name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        for _ in range(5):  # another test may take the port between free_port() and the bind
            self.port = free_port()
            with open(self.log_path, "w") as log:
                self.process = subprocess.Popen(argv(self.port), stdout=log, stderr=subprocess.STDOUT,
                                                cwd=workdir)
            if self._wait_ready(20.0):
                return
            self.stop()
        raise RuntimeError(f"{name} did not start; its log:\n{self.log_path.read_text()[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self._answers():
                return True
            time.sleep(0.05)
        return False

    def _answers(self) -> bool:
        try:
            http_get(self.url + self.ready_path, timeout=1.0)
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Pushgateway(Service):
    """A Pushgateway that keeps its groups in memory only."""

    def __init__(self, workdir: Path, web_config: Path | None = None) -> None:
        binary = require_tool("prometheus-pushgateway")
        extra = [f"--web.config.file={web_config}"] if web_config else []
        super().__init__(
            lambda port: [binary, f"--web.listen-address={LOOPBACK}:{port}", "--persistence.file=",
                          "--log.level=warn", *extra],
            workdir, "pushgateway",
        )

    def _answers(self) -> bool:
        # behind basic auth or TLS the ready page refuses plain requests: a listening port is enough here
        try:
            socket.create_connection((LOOPBACK, self.port), timeout=1.0).close()
            return True
        except OSError:
            return False

    def groups(self) -> list[dict[str, Any]]:
        """The gateway's groups, each with its `labels` (the grouping key)."""
        return json.loads(http_get(self.url + "/api/v1/metrics"))["data"]

    def group_labels(self, job: str) -> list[dict[str, str]]:
        """Grouping keys of every group of `job`."""
        return [g["labels"] for g in self.groups() if g["labels"].get("job") == job]

    def text(self) -> str:
        return http_get(self.url + "/metrics").decode()


class Prometheus(Service):
    """A Prometheus scraping `targets` every half second, with `rule_files` loaded."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path] = ()) -> None:
        binary = require_tool("prometheus")
        config = {
            "global": {"scrape_interval": f"{int(SCRAPE_SECONDS * 1000)}ms", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": targets}]}
            ],
        }
        (workdir / "prometheus.yml").parent.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        super().__init__(
            lambda port: [binary, f"--config.file={workdir / 'prometheus.yml'}",
                          f"--storage.tsdb.path={workdir / 'data'}",
                          f"--web.listen-address={LOOPBACK}:{port}",
                          f"--query.lookback-delta={LOOKBACK}", "--log.level=warn"],
            workdir, "prometheus",
        )
        # target discovery hands its first targets over about 5 s after start: scraping begins then
        self.wait_for("up", timeout=30.0)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate `expr` (instant query, at unix time `at` or now); raises on a PromQL error."""
        return query(self.url, expr, at)

    def wait_for(self, expr: str, check: Callable[[list[dict[str, Any]]], bool] = bool,
                 timeout: float = 20.0) -> list[dict[str, Any]]:
        return wait_for(self.url, expr, check, timeout)


def query(prom_url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """Instant query against the Prometheus at `prom_url`; raises `AssertionError` with the error text."""
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    url = f"{prom_url}/api/v1/query?{urllib.parse.urlencode(params)}"
    try:
        body = json.loads(http_get(url))
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{expr!r}: {exc.read().decode()}") from None
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(prom_url: str, expr: str, check: Callable[[list[dict[str, Any]]], bool] = bool,
             timeout: float = 20.0) -> list[dict[str, Any]]:
    """Poll `expr` until `check(result)` holds; the last result goes into the failure message."""
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = query(prom_url, expr)
        if check(result):
            return result
        time.sleep(0.2)
    raise AssertionError(f"{expr!r}: condition not met within {timeout:.0f} s; last result {result}")


def value(sample: dict[str, Any]) -> float:
    """The float value of one instant-query result (NaN and +Inf included)."""
    return float(sample["value"][1])


class FlakyProxy:
    """A TCP proxy on a free loopback port that either hangs (accepts, never answers) or forwards.

    Stands in for a gateway behind a stuck load balancer: `hang=True` makes every request time out;
    switching to `hang=False` lets later requests through to `upstream` (host, port).
    """

    def __init__(self, upstream: tuple[str, int] | None, hang: bool = True) -> None:
        self.upstream, self.hang = upstream, hang
        self._server = socket.socket()
        self._server.bind((LOOPBACK, 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self._held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.hang or self.upstream is None:
                self._held.append(client)
                continue
            upstream = socket.create_connection(self.upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        for s in self._held:
            s.close()


DCGM_EXPORTER_POD = "dcgm-exporter-7xk2p"


def push_external_series(gateway_url: str, run_name: str, namespace: str, restarts: int = 0) -> None:
    """Push what the exporters beside the trainer report about a run, for the panels that read them.

    - dcgm-exporter, for this host's pod (the trainer's `pod` is the host name), in both label shapes a
      Prometheus ends up with: GPU 0 with the pod attribution as `pod` (scraped with honorLabels), GPU 1
      as `exported_pod` beside the exporter's own `pod` (the usual ServiceMonitor, honorLabels false).
    - kube-state-metrics: `restarts` restarts of the run's master container, its last one an OOM kill.
    """
    from prometheus_client import CollectorRegistry, Counter, Gauge, pushadd_to_gateway

    host = socket.gethostname()
    registry = CollectorRegistry()
    labels = ("gpu", "pod", "exported_pod", "namespace", "exported_namespace")
    util = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels, registry=registry)
    memory = Gauge("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", labels, registry=registry)
    for gauge, value in ((util, 87), (memory, 61000)):
        gauge.labels("0", host, "", namespace, "").set(value)
        gauge.labels("1", DCGM_EXPORTER_POD, host, "monitoring", namespace).set(value)
    pushadd_to_gateway(gateway_url, job=f"dcgm-{run_name}", registry=registry)

    registry = CollectorRegistry()
    pod = ("namespace", "pod", "container")
    Counter("kube_pod_container_status_restarts", "Restarts of the container.", pod,
            registry=registry).labels(namespace, f"{run_name}-master-0", "pytorch").inc(restarts)
    Gauge("kube_pod_container_status_last_terminated_reason", "Why the container last terminated.",
          (*pod, "reason"), registry=registry).labels(namespace, f"{run_name}-master-0", "pytorch", "OOMKilled").set(1)
    pushadd_to_gateway(gateway_url, job=f"ksm-{run_name}", registry=registry)


def push_sample_series(gateway_url: str, run_name: str, namespace: str) -> None:
    """Add the sampling feature's series to the run's job group, as rank 0 pushes them (a POST keeps the
    rest of the group): a sample set at step 8 slightly worse than the best one."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, pushadd_to_gateway

    registry = CollectorRegistry()
    for name, value in (("sample_wer", 0.12), ("sample_cer", 0.05), ("sample_speaker_similarity", 0.81),
                        ("sample_best_wer", 0.10), ("sample_best_speaker_similarity", 0.83), ("sample_step", 8)):
        Gauge(f"higgs_trainer_{name}", name, registry=registry).set(value)
    Counter("higgs_trainer_generated_clips", "clips", registry=registry).inc(16)
    Counter("higgs_trainer_sample_failures", "failures", registry=registry).inc(1)
    pushadd_to_gateway(gateway_url, job=run_name, registry=registry, grouping_key={"namespace": namespace})
