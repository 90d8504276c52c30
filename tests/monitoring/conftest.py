"""Fixtures: a real Pushgateway scraped by a real Prometheus (with the alert rules loaded), on loopback.

`stack` is shared by a test module; its tests keep apart by run name (`run_name` is unique per test).
`fresh_stack` is a private pair for tests that leave the gateway in a state others must not see.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.monitoring.stack import RULES, Prometheus, Pushgateway


@dataclass
class Stack:
    gateway: Pushgateway
    prometheus: Prometheus

    def stop(self) -> None:
        self.prometheus.stop()
        self.gateway.stop()


def start_stack(workdir: Path) -> Stack:
    gateway = Pushgateway(workdir / "gateway")
    try:
        prometheus = Prometheus(workdir / "prometheus", [gateway.url.removeprefix("http://")], [RULES])
    except BaseException:
        gateway.stop()
        raise
    return Stack(gateway, prometheus)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("stack"))
    yield s
    s.stop()


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(tmp_path / "stack")
    yield s
    s.stop()


@pytest.fixture
def run_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"
