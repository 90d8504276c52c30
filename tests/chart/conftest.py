"""Fixtures of the chart tests: one test per Helm major where the behaviour could differ."""

from __future__ import annotations

import pytest

from tests.chart.chartlib import HELMS, helm_bin


@pytest.fixture(params=HELMS)
def helm(request: pytest.FixtureRequest) -> str:
    """Each Helm major in turn: the chart must work with Helm 3 and Helm 4."""
    return helm_bin(request.param)


@pytest.fixture
def helm4() -> str:
    """Helm 4, for checks of the rendered objects (test_render.py shows Helm 3 renders the same)."""
    return helm_bin("helm4")
