"""The Grafana dashboard: type-checked against Grafana's own schema package, and consistent with the series.

The schema check writes the dashboard into a TypeScript file typed with `@grafana/schema`'s `Dashboard`
(and each panel's options with its panel type's `Options`), and runs `tsc --noEmit --strict` on it:
unknown keys, missing required fields and wrong enum values all fail. `Json<T>` lets the plain strings
of a JSON file stand for the schema's string enums. Queries are checked against a real Prometheus in
test_live_queries.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.monitoring.checks import (
    alert_expressions,
    dashboard,
    dashboard_annotations,
    dashboard_targets,
    documented_series,
)
from tests.monitoring.stack import REPO
from tests.tooling import missing, require_tool

NPM_TOOLS = REPO / ".cache" / "npm-tools"
PANELCFG = "@grafana/schema/dist/esm/raw/composable/{0}/panelcfg/x/{1}PanelCfg_types.gen"
# panel type -> (TypeScript name of its options type, of its custom field config type or None)
PANEL_TYPES = {"stat": ("StatOptions", None), "timeseries": ("TimeSeriesOptions", "TimeSeriesFieldConfig")}
# series the dashboard and rules may use that the trainer does not export: the gateway's, dcgm-exporter's
EXTERNAL_SERIES = {"push_time_seconds", "push_failure_time_seconds", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"}
# the sampling feature's series (docs/monitoring.md documents them with it); the panels and alert are tested
# with pushed values of these names (tests/monitoring/stack.py push_external_series)
SAMPLE_SERIES = {f"higgs_trainer_{n}" for n in (
    "sample_wer", "sample_cer", "sample_speaker_similarity", "sample_best_wer", "sample_best_speaker_similarity",
    "sample_step", "generated_clips_total", "sample_failures_total")}


def typescript_source(board: dict[str, Any]) -> str:
    lines = [
        "import type { AnnotationQuery, Dashboard, DataQuery } from '@grafana/schema';",
        f"import type {{ Options as StatOptions }} from '{PANELCFG.format('stat', 'Stat')}';",
        "import type { Options as TimeSeriesOptions, FieldConfig as TimeSeriesFieldConfig } from "
        f"'{PANELCFG.format('timeseries', 'TimeSeries')}';",
        "type Json<T> = T extends string ? `${T}` : T extends readonly (infer U)[] ? Json<U>[]"
        " : T extends object ? { [K in keyof T]: Json<T[K]> } : T;",
        # A Prometheus annotation's target carries the datasource's own fields (expr), as a panel's
        # targets do (typed Record<string, unknown> there); the schema package has no Prometheus query type.
        "type Board = Omit<Dashboard, 'annotations'> & { annotations?: { list?: "
        "AnnotationQuery<DataQuery & Record<string, unknown>>[] } };",
        f"export const dashboard: Json<Board> = {json.dumps(board)};",
    ]
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        options, custom = PANEL_TYPES[panel["type"]]
        lines.append(f"export const options{panel['id']}: Json<{options}> = {json.dumps(panel['options'])};")
        if custom:
            value = json.dumps(panel["fieldConfig"]["defaults"].get("custom", {}))
            lines.append(f"export const custom{panel['id']}: Json<{custom}> = {value};")
    return "\n".join(lines) + "\n"


def type_check(board: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    tsc = require_tool("tsc", NPM_TOOLS / "node_modules" / ".bin")
    if not (NPM_TOOLS / "node_modules" / "@grafana" / "schema").is_dir():
        missing("the npm package @grafana/schema",
                "scripts/ci/install_monitoring_tools.sh installs it (scripts/test.sh runs it for this test)")
    (workdir / "node_modules").symlink_to(NPM_TOOLS / "node_modules")
    (workdir / "dashboard.ts").write_text(typescript_source(board))
    return subprocess.run(
        [tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "esnext",
         "--moduleResolution", "bundler", "dashboard.ts"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )


def test_dashboard_passes_the_grafana_schema_type_check(tmp_path: Path) -> None:
    result = type_check(dashboard(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_wrong_option_and_an_unknown_key(tmp_path: Path) -> None:
    board = dashboard()
    stat = next(p for p in board["panels"] if p["type"] == "stat")
    stat["options"]["textMode"] = "values"
    board["graphTooltp"] = 1
    result = type_check(board, tmp_path)
    assert result.returncode != 0
    assert "'\"values\"' is not assignable" in result.stdout
    assert "graphTooltp" in result.stdout


def test_dashboard_has_a_stable_uid_and_the_run_variables() -> None:
    board = dashboard()
    assert board["uid"] == "higgs-audio-trainer"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "run"]
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert variables["namespace"]["includeAll"] and variables["namespace"]["allValue"] == ".*"
    assert 'namespace=~"$namespace"' in variables["run"]["query"]["query"]


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_every_trainer_query_selects_the_chosen_run_and_namespace() -> None:
    for title, expr in dashboard_targets() + dashboard_annotations():
        for selector in re.findall(r"higgs_trainer_\w+\{([^}]*)\}", expr):
            assert 'job=~"$run"' in selector and 'namespace=~"$namespace"' in selector, (title, expr)


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, p["title"]
        cells |= area


def test_dashboard_and_rules_use_documented_series_and_every_documented_series_is_used() -> None:
    texts = [expr for _, expr in dashboard_targets() + dashboard_annotations()] + list(alert_expressions().values())
    pattern = r"\b(?:higgs_trainer_\w+|[A-Za-z_]+_seconds|DCGM_\w+)\b"
    used = {name for text in texts for name in re.findall(pattern, text)}
    rows = documented_series()
    deprecated = {name for name, row in rows.items() if row["meaning"].startswith("Deprecated")}
    assert used - set(rows) - EXTERNAL_SERIES - SAMPLE_SERIES == set()
    assert set(rows) - deprecated - used == set()
    assert used & deprecated == set(), "the dashboard and alerts read the counters, not the deprecated gauges"


def test_rate_panels_have_units() -> None:
    for panel in dashboard()["panels"]:
        exprs = " ".join(t["expr"] for t in panel.get("targets", []))
        if "rate(" in exprs or "increase(" in exprs:
            assert panel["fieldConfig"]["defaults"]["unit"] != "none", panel["title"]


def test_gpu_panels_join_either_label_shape_of_dcgm_exporter() -> None:
    gpu = [(t, e) for t, e in dashboard_targets() if "DCGM_" in e]
    assert len(gpu) == 2
    for title, expr in gpu:
        assert '"pod", "$1", "exported_pod", "(.+)"' in expr and 'exported_pod=""' in expr, title
