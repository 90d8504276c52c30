"""The fast tier (`scripts/test.sh -m "not slow"`) selects no test that needs a Go build or the Docker engine:
scripts/test.sh installs the tools of the tests it selects, so one such test would put a 2.5 GB source
download and build, or a Docker engine and a base image, into a newcomer's first run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import clean_env
from tests.tooling import REPO

pytestmark = pytest.mark.slow  # a whole collection of the suite in a child process

# The tests whose tools scripts/test.sh installs with a Go build (install_apiserver.sh) or the Docker engine
# (install_docker_tools.sh without --lint-only): its `needs` patterns.
FULL_TIER_ONLY = ("tests/trainer/commands/test_status.py", "tests/image/test_image.py")


def test_the_fast_tier_selects_nothing_that_needs_a_go_build_or_docker() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", "not slow"], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600)
    selected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert len(selected) > 500, proc.stdout[-2000:]  # the collection worked: the chart and unit tests are there
    assert [t for t in selected if t.startswith(FULL_TIER_ONLY)] == []
    script = (REPO / "scripts" / "test.sh").read_text()
    assert all(f'needs "{path}"' in script for path in FULL_TIER_ONLY)  # the patterns are the script's own
