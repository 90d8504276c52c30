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


def missing(what: str) -> None:
    """Fail under CI, skip elsewhere, with a message that says how to install `what`."""
    if in_ci():
        pytest.fail(f"{what} is missing, and CI must run every test (see .ci/run)")
    pytest.skip(f"{what} is missing (the test command in README.md installs it)")


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
