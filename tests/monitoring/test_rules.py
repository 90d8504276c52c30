"""The alert rules: `promtool check rules`, and the promtool unit tests of rules_test.yaml.

The unit tests must cover every alert both ways (firing and silent), and must fail when an alert is
broken: each alert in turn is replaced by one that never fires, and promtool has to notice. Every alert
links its own section of docs/runbook.md.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.monitoring.checks import alert_expressions
from tests.monitoring.stack import REPO, RULES
from tests.test_readme import anchors
from tests.tooling import require_tool

UNIT_TESTS = Path(__file__).with_name("rules_test.yaml")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def test_promtool_check_rules_passes() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_expressions())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_show_every_alert_firing_and_silent() -> None:
    cases = [c for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    for alert in alert_expressions():
        outcomes = {bool(c["exp_alerts"]) for c in cases if c["alertname"] == alert}
        shown = "firing" if True in outcomes else "silent"
        assert outcomes == {True, False}, f"{alert}: the unit tests show it {shown} only"


def test_every_alert_has_a_severity_summary_and_description() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


@pytest.mark.parametrize("alert", sorted(alert_expressions()))
def test_unit_tests_fail_when_an_alert_never_fires(alert: str, tmp_path: Path) -> None:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) == 0"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = ["rules.yaml"]
    (tmp_path / "rules_test.yaml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert f"alertname: {alert}," in result.stdout + result.stderr


def test_every_alert_has_a_runbook_url_to_its_own_section_of_the_runbook() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    runbook = REPO / "docs" / "runbook.md"
    sections = anchors(runbook)
    for rule in rules:
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert (REPO / path).resolve() == runbook, rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in sections, (rule["alert"], anchor)
