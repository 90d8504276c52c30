"""How tests find external tools: a missing tool skips locally and fails in CI.

CI sets `CI`; there a skipped test would hide a broken install step, so `require_tool` fails instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def in_ci() -> bool:
    """True when running under CI (any non-empty `CI` other than false/0)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


INSTALLED_BY_TEST_SH = "scripts/test.sh installs it when it selects this test"


def missing(what: str, fix: str = INSTALLED_BY_TEST_SH) -> None:
    """Fail under CI, skip elsewhere. `fix` says what would make the test run, and must be true of this
    case: the default claims that scripts/test.sh installs `what`, which holds only for the tools of
    scripts/setup.sh --test and scripts/ci/*.sh; a privilege, a kernel feature or a file the repository
    does not carry needs its own `fix`."""
    if in_ci():
        pytest.fail(f"{what} is missing, and CI must run every test (see .ci/run); {fix}")
    pytest.skip(f"{what} is missing; {fix}")


def require_tool(name: str, *extra_dirs: Path) -> str:
    """Absolute path of executable `name` on PATH or in `extra_dirs`, else skip/fail (see `missing`)."""
    for d in extra_dirs:
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if not found:
        missing(f"the tool {name!r}")
    return found  # type: ignore[return-value]
