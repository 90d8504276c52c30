"""Delivery of the run's series: pushes to a Pushgateway off the training thread, or a /metrics server.

An attempt's first push that reaches the gateway replaces each of its groups whole (HTTP PUT): a restart
must not inherit the previous attempt's exit code, checkpoint times or losses, which would read as this
attempt's (a false stall or no-checkpoint alert, an exit code beside "running"). Every later push is a
pushadd (HTTP POST), which replaces only the names it carries. A group marked `replace=False` (the
last-success timestamp, see `trainer.metrics.series`) is only ever added to. All network I/O happens on the
pusher's daemon thread: a slow or dead gateway costs a counted failure and a warning, never training time.
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.request import HTTPSHandler, Request, build_opener

from prometheus_client import CollectorRegistry, delete_from_gateway, push_to_gateway, pushadd_to_gateway
from prometheus_client.registry import Collector

from trainer.metrics.series import RankSeries

log = logging.getLogger(__name__)

FINAL_PUSH_ATTEMPTS = 3
RETRY_BACKOFF_SECONDS = 1.0
WARN_EVERY_SECONDS = 300.0

Handler = Callable[..., Callable[[], None]]


@dataclass(frozen=True)
class Group:
    """One Pushgateway group: its grouping labels besides `job`, and what is pushed to it.

    `replace`: this attempt's first push that arrives replaces the whole group (PUT), dropping whatever an
    earlier attempt left there; `False` for a group whose series must outlive attempts.
    """

    labels: dict[str, str]
    collector: Collector
    replace: bool = True

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        """The group's labels in a fixed order, to tell groups apart."""
        return tuple(sorted(self.labels.items()))


def gateway_handler(
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    insecure_skip_verify: bool = False,
) -> Handler:
    """A prometheus-client push handler with optional basic auth and TLS settings.

    prometheus-client's own TLS handler insists on a client certificate; gateways behind an ingress
    usually want a CA bundle and basic auth instead. The TLS context is built once, not per push.

    Args:
        username (`str`, *optional*):
            Basic-auth user; sent with every request when set.
        password (`str`, *optional*):
            Basic-auth password.
        ca_file (`str`, *optional*):
            PEM bundle that signed the gateway's certificate; `None` trusts the system CAs.
        insecure_skip_verify (`bool`, *optional*, defaults to `False`):
            Accept any certificate and host name.

    Returns:
        `Callable`: a handler for `pushadd_to_gateway` and `delete_from_gateway`.
    """
    context = ssl.create_default_context(cafile=ca_file)
    if insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    opener = build_opener(HTTPSHandler(context=context))
    auth: list[tuple[str, str]] = []
    if username:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        auth = [("Authorization", f"Basic {token}")]

    def handler(
        url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        def handle() -> None:
            request = Request(url, data=data, method=method, headers=dict([*headers, *auth]))
            with opener.open(request, timeout=timeout) as response:  # raises HTTPError on 4xx/5xx
                response.read()

        return handle

    return handler


class Pusher:
    """Pushes groups to a Pushgateway from a daemon thread, every `interval` seconds, never blocking callers.

    A slow or dead gateway costs a counted failure and a warning (the first after a success, then one
    per `WARN_EVERY_SECONDS`), nothing else. `finish` hands the thread a last set of groups, which it
    pushes with retries (and then deletes, if asked), and waits a bounded time for that.

    Args:
        url (`str`):
            Gateway base URL.
        job (`str`):
            Value of the `job` grouping label: the run name.
        groups (`list[Group]`):
            What to push every interval.
        interval (`float`):
            Seconds between pushes.
        timeout (`float`):
            Timeout of one request.
        handler (`Callable`):
            From `gateway_handler`.
        failures (`RankSeries`):
            Where failed pushes are counted.
    """

    def __init__(
        self,
        url: str,
        job: str,
        groups: list[Group],
        *,
        interval: float,
        timeout: float,
        handler: Handler,
        failures: RankSeries,
    ) -> None:
        self.url, self.job, self.groups = url, job, groups
        self.interval, self.timeout, self.handler, self.failures = interval, timeout, handler, failures
        self._stop = threading.Event()
        self._final: tuple[list[Group], bool] = (groups, False)
        self._final_ok = False
        self._failing_since: float | None = None
        self._last_warning = 0.0
        self._replaced: set[tuple[tuple[str, str], ...]] = set()  # groups this attempt has PUT
        self._thread = threading.Thread(target=self._run, name="metrics-pusher", daemon=True)

    def start(self) -> None:
        """Start pushing every interval, on the pusher's own thread."""
        self._thread.start()

    def finish(self, groups: list[Group], *, delete: bool) -> bool:
        """Push `groups` (retried), then delete this pusher's groups if `delete`; True if all of it worked.

        Waits at most as long as the retries can take, so a gateway that trickles bytes cannot hold the
        process: past that the daemon thread is left behind.
        """
        self._final = (groups, delete)
        self._stop.set()
        budget = self.finish_budget(len(groups), delete=delete)
        self._thread.join(budget)
        if self._thread.is_alive():
            log.warning("metrics: the final push to %s did not end within %.0f s; giving up", self.url,
                        budget)
            return False
        return self._final_ok

    def finish_budget(self, final_groups: int, *, delete: bool) -> float:
        """The longest `finish` waits, in seconds, for `final_groups` groups (and the delete, if asked).

        The push in flight (one timeout per group), every attempt of every final request timing out, the backoff between
        attempts, and 1 s to spare. Against a gateway that accepts and never answers, with the default 1 s timeout, a
        successful rank 0 (job, rank and last-success groups) waits at most 15 s.
        """
        in_flight = len(self.groups) * self.timeout
        backoff = RETRY_BACKOFF_SECONDS * sum(range(FINAL_PUSH_ATTEMPTS)) * (2 if delete else 1)
        requests = final_groups + (len(self.groups) if delete else 0)
        return in_flight + FINAL_PUSH_ATTEMPTS * requests * self.timeout + backoff + 1.0

    def _run(self) -> None:
        while True:
            self._push(self.groups)
            if self._stop.wait(self.interval):
                break
        groups, delete = self._final
        ok = self._retry(lambda: self._push(groups), "final push")
        if ok and delete:
            ok = self._retry(self._delete, "delete")
        self._final_ok = ok

    def _retry(self, action: Callable[[], bool], what: str) -> bool:
        for attempt in range(1, FINAL_PUSH_ATTEMPTS + 1):
            if action():
                return True
            if attempt < FINAL_PUSH_ATTEMPTS:
                time.sleep(RETRY_BACKOFF_SECONDS * attempt)
        log.warning("metrics: %s to %s failed %d times; the gateway keeps older values", what, self.url,
                    FINAL_PUSH_ATTEMPTS)
        return False

    def _push(self, groups: Iterable[Group]) -> bool:
        return self._each(groups, self._send)

    def _send(self, group: Group) -> None:
        """PUT `group` if this attempt has not yet replaced it, else POST; raises what the request raises."""
        first = group.replace and group.key not in self._replaced
        send = push_to_gateway if first else pushadd_to_gateway
        send(self.url, job=self.job, registry=group.collector, grouping_key=group.labels,
             timeout=self.timeout, handler=self.handler)
        if first:
            self._replaced.add(group.key)

    def _delete(self) -> bool:
        return self._each(self.groups, lambda g: delete_from_gateway(
            self.url, job=self.job, grouping_key=g.labels, timeout=self.timeout, handler=self.handler,
        ))

    def _each(self, groups: Iterable[Group], request: Callable[[Group], None]) -> bool:
        ok = True
        for group in groups:
            try:
                request(group)
            except Exception as exc:  # any failure of the gateway must stay out of training
                ok = False
                self._failed(exc)
        if ok and self._failing_since is not None:
            log.info("metrics: pushes to %s work again", self.url)
            self._failing_since = None
        return ok

    def _failed(self, exc: Exception) -> None:
        now = time.time()
        self.failures.push_failures.inc()
        self.failures.push_failure_time.set(now)
        first = self._failing_since is None
        if first:
            self._failing_since = now
        if first or now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning("metrics: push to %s failed (%s: %s); training goes on", self.url,
                        type(exc).__name__, exc)


def serve(port: int, address: str, collector: Collector) -> Callable[[], None]:
    """Serve `collector` on http://address:port/metrics from a daemon thread; returns a stop function."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, thread = start_http_server(port, addr=address, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5.0)

    return stop


__all__ = ["Group", "Pusher", "gateway_handler", "serve"]
