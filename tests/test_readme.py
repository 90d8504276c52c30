"""The README's generated blocks match the code, and its two commands are the scripts CI runs."""

from __future__ import annotations

import subprocess
import sys

from tests.tooling import REPO


def test_readme_option_and_exit_code_tables_are_current() -> None:
    proc = subprocess.run([sys.executable, "scripts/update_readme.py", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_readme_documents_every_env_var() -> None:
    from trainer.config.values import option_specs

    text = (REPO / "README.md").read_text()
    from trainer.config.cli import CONFIG_ENV

    missing = [s.env for s in option_specs() if f"`{s.env}`" not in text]
    missing += [CONFIG_ENV] if f"`{CONFIG_ENV}`" not in text else []
    assert not missing


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/test.sh   #" in readme and "scripts/demo.sh   #" in readme
    assert "exec bash scripts/test.sh" in ci
