"""What a run must show in Prometheus, checked through its HTTP API; shared by the monitoring and e2e tests.

- `assert_run_metrics`: every series of the table in docs/monitoring.md is there for the run, with plausible
  values (steps increase, losses finite, the expected status).
- `assert_dashboard_queries`: every query of the Grafana dashboard, variables substituted as Grafana
  would, returns data for the run.
- `alert_expressions` / `alert_result`: the alert rules' expressions, evaluated for one run.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from tests.monitoring.stack import DASHBOARD, REPO, RULES, Pushgateway, http_get, query, value, wait_for
from trainer.metrics.series import STATUSES

DOCS = REPO / "docs" / "monitoring.md"  # its series table
# Grafana's interval variables, as the tests substitute them (the test Prometheus scrapes every 0.5 s)
INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def documented_series(path: Path = DOCS) -> dict[str, dict[str, str]]:
    """The series table of docs/monitoring.md: name -> {type, labels, unit, meaning}."""
    rows: dict[str, dict[str, str]] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`higgs_trainer_\w+`", cells[0]):
            fields = ("type", "labels", "unit", "meaning")
            rows[cells[0].strip("`")] = dict(zip(fields, cells[1:], strict=True))
    return rows


def _selector(run_name: str, namespace: str | None) -> str:
    return f'job="{run_name}"' + (f', namespace="{namespace}"' if namespace else "")


def query_range(prom_url: str, expr: str, start: float, end: float, step: float = 0.5
                ) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                     "step": step})
    body = json.loads(http_get(f"{prom_url}/api/v1/query_range?{params}"))
    assert body["status"] == "success", body
    return body["data"]["result"]


def assert_run_metrics(
    prom_url: str,
    run_name: str,
    *,
    world_size: int = 1,
    namespace: str | None = None,
    status: str = "succeeded",
    codebooks: int | None = None,
    text_loss: bool = True,
    evaluated: bool = True,
    checkpointed: bool = True,
    skipped_samples: float | None = None,
    push_failures: float | None = 0.0,
    min_step_values: int = 2,
    timeout: float = 30.0,
) -> dict[str, list[dict[str, Any]]]:
    """Assert that Prometheus holds every documented series of `run_name`, with plausible values.

    Waits (up to `timeout` seconds) until the final status and all `world_size` ranks have been
    scraped. Then: the status state set says `status`; steps reached `max_steps` when the run
    succeeded and took at least `min_step_values` distinct values over the run (so progress was seen
    while training); losses, learning rate and gradient norm are finite and not negative; throughput is
    positive; checkpoint step, time, duration and size fit the run; every rank reports memory, its pod
    and its push failures. Series that depend on the run (`text_loss`, `evaluated`, `checkpointed`)
    must be absent when not expected.

    Args:
        prom_url (`str`): Prometheus base URL.
        run_name (`str`): the run's `job` label.
        world_size (`int`): ranks that must report rank series.
        namespace (`str`, *optional*): the `namespace` label the run pushed, if any.
        status (`str`): expected final status.
        codebooks (`int`, *optional*): exact number of codebook series, when known.
        text_loss, evaluated, checkpointed (`bool`): whether those series must be present (else absent).
        skipped_samples (`float`, *optional*): exact value of the skipped-samples counter, when known.
        push_failures (`float`, *optional*, defaults to `0.0`): exact failed pushes per rank; `None` skips.
        min_step_values (`int`): distinct values of the global step Prometheus must have seen.
        timeout (`float`): seconds to wait for the final scrape.

    Returns:
        `dict`: each documented series name -> its instant-query results (for further checks).
    """
    sel = _selector(run_name, namespace)
    wait_for(prom_url, f'higgs_trainer_run_status{{{sel}, status="{status}"}} == 1', timeout=timeout)
    wait_for(prom_url, f"count(higgs_trainer_rank_info{{{sel}}})",
             lambda r: bool(r) and value(r[0]) == world_size, timeout=timeout)
    if status == "succeeded":  # the last-success group is pushed after the status: a scrape between sees one only
        wait_for(prom_url, f"higgs_trainer_last_success_time_seconds{{{sel}}}", timeout=timeout)
    now = time.time()
    got = {name: query(prom_url, f'{name}{{{sel}}}') for name in documented_series()}

    def one(name: str) -> float:
        assert len(got[name]) == 1, f"{name}: expected one series for {run_name}, got {got[name]}"
        return value(got[name][0])

    def absent_or(name: str, wanted: bool) -> bool:
        if not wanted:
            assert not got[name], f"{name}: not expected for this run, got {got[name]}"
        return wanted

    def finite_non_negative(name: str) -> None:
        assert got[name], f"{name}: no series for {run_name}"
        for sample in got[name]:
            v = value(sample)
            assert math.isfinite(v) and v >= 0, f"{name}{sample['metric']}: {v}"

    states = {s["metric"]["status"]: value(s) for s in got["higgs_trainer_run_status"]}
    assert states == {s: float(s == status) for s in STATUSES}, f"status of {run_name}: {states}"
    start = one("higgs_trainer_start_time_seconds")
    assert now - 86400 < start <= now, start
    step, max_steps = one("higgs_trainer_global_step"), one("higgs_trainer_max_steps")
    assert 0 < step <= max_steps, (step, max_steps)
    if status == "succeeded":
        assert step == max_steps, (step, max_steps)
        assert start <= one("higgs_trainer_last_success_time_seconds") <= now
    # the range runs a step past `now` so that its last point sees the last scrape
    steps_seen = query_range(prom_url, f"higgs_trainer_global_step{{{sel}}}", start, now + 1.0)
    assert len(steps_seen) == 1, steps_seen
    values = [float(v) for _, v in steps_seen[0]["values"]]
    assert values == sorted(values), f"global step went down: {values}"
    assert len(set(values)) >= min_step_values, f"global step seen at {sorted(set(values))} only"
    assert one("higgs_trainer_epoch") > 0
    assert start <= one("higgs_trainer_last_progress_time_seconds") <= now
    for name in ("loss", "audio_loss", "codebook_loss", "learning_rate", "grad_norm"):
        finite_non_negative(f"higgs_trainer_{name}")
    if codebooks is not None:
        labels = sorted(s["metric"]["codebook"] for s in got["higgs_trainer_codebook_loss"])
        assert labels == sorted(str(k) for k in range(codebooks)), labels
    if absent_or("higgs_trainer_text_loss", text_loss):
        finite_non_negative("higgs_trainer_text_loss")
    for name in ("higgs_trainer_eval_loss", "higgs_trainer_eval_audio_loss"):
        if absent_or(name, evaluated):
            finite_non_negative(name)
    for name in ("samples_per_second", "audio_seconds_per_second", "tokens_per_second", "trained_samples_total",
                 "trained_tokens_total", "trained_audio_seconds_total", "step_seconds_total"):
        assert 0 < one(f"higgs_trainer_{name}") < math.inf, name
    assert 0 <= one("higgs_trainer_data_wait_seconds_total") <= one("higgs_trainer_step_seconds_total")
    if status == "succeeded":  # the steps of this attempt: all of them, since it started from scratch
        assert one("higgs_trainer_optimizer_steps_total") == step
    checkpoint_series = [n for n in got if n.startswith("higgs_trainer_last_checkpoint_")]
    if all([absent_or(n, checkpointed) for n in checkpoint_series]):
        assert 0 < one("higgs_trainer_last_checkpoint_step") <= step
        assert start <= one("higgs_trainer_last_checkpoint_time_seconds") <= now
        assert 0 <= one("higgs_trainer_last_checkpoint_duration_seconds") < now - start + 1
        assert 0 <= one("higgs_trainer_last_checkpoint_blocking_seconds") <= one(
            "higgs_trainer_last_checkpoint_duration_seconds")
        assert one("higgs_trainer_last_checkpoint_size_bytes") > 0
    assert one("higgs_trainer_nan_steps_skipped") == one("higgs_trainer_nan_steps_skipped_total") == 0
    code = one("higgs_trainer_exit_code")
    assert code == 0 if status == "succeeded" else code > 0, (status, code)
    skipped = one("higgs_trainer_skipped_samples_total")
    assert skipped >= 0 and (skipped_samples is None or skipped == skipped_samples), skipped
    _assert_rank_series(got, world_size, push_failures, now)
    return got


def assert_two_rank_run_reported(gateway: Pushgateway, prom_url: str, run_name: str, namespace: str, *,
                                 skipped_samples: float) -> None:
    """A finished two-rank run as the monitoring sees it: the gateway holds its job group, its last-success
    group and one group per rank, Prometheus has every documented series (`assert_run_metrics`), and every
    dashboard query returns data, DCGM's joined one too (the test pushed the exporters' series for the run
    before it started, and the sampling feature's after it ended)."""
    groups = sorted((g.get("rank", ""), g.get("outcome", "")) for g in gateway.group_labels(run_name))
    assert groups == [("", ""), ("", "succeeded"), ("0", ""), ("1", "")], groups
    assert_run_metrics(prom_url, run_name, world_size=2, namespace=namespace, codebooks=2,
                       skipped_samples=skipped_samples)
    wait_for(prom_url, f'DCGM_FI_DEV_GPU_UTIL{{job="dcgm-{run_name}"}}')
    # the pushed sample values, not the trainer's own zero-valued counters, scraped twice (for rates)
    wait_for(prom_url, f'count_over_time(higgs_trainer_sample_step{{job="{run_name}"}}[1m]) > 1')
    assert_dashboard_queries(prom_url, run_name, namespace)


def _assert_rank_series(got: dict[str, list[dict[str, Any]]], world_size: int, push_failures: float | None,
                        now: float) -> None:
    ranks = [str(r) for r in range(world_size)]

    def by_rank(name: str) -> dict[str, float]:
        per_rank = {s["metric"]["rank"]: value(s) for s in got[name]}
        assert sorted(per_rank) == ranks, f"{name}: ranks {sorted(per_rank)}, expected {ranks}"
        return per_rank

    assert all(v == 1 for v in by_rank("higgs_trainer_rank_info").values())
    assert all(s["metric"].get("pod") for s in got["higgs_trainer_rank_info"])
    used = by_rank("higgs_trainer_device_memory_used_bytes")
    peak = by_rank("higgs_trainer_device_memory_peak_bytes")
    total = by_rank("higgs_trainer_device_memory_total_bytes")
    for r in ranks:
        assert 0 < used[r] <= peak[r] <= total[r], (r, used[r], peak[r], total[r])
    failures = by_rank("higgs_trainer_push_failures_total")
    failed_at = by_rank("higgs_trainer_push_failure_time_seconds")
    for r in ranks:
        assert failures[r] >= 0 and (push_failures is None or failures[r] == push_failures), failures
        assert (failed_at[r] == 0) == (failures[r] == 0) and failed_at[r] <= now, (failures, failed_at)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets(board: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, rows included."""
    board = board or dashboard()
    out = []
    for panel in board["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            out += [(p["title"], t["expr"]) for t in p.get("targets", [])]
    return out


def dashboard_annotations(board: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(annotation name, PromQL) for every Prometheus annotation query of the dashboard."""
    board = board or dashboard()
    return [(a["name"], a["target"]["expr"]) for a in board["annotations"]["list"]
            if a["datasource"].get("type") == "prometheus"]


def assert_annotation_queries(prom_url: str, run_name: str, namespace: str | None, start: float,
                              end: float) -> None:
    """Every annotation query marks something for `run_name` between `start` and `end`, evaluated as Grafana
    evaluates annotations: a range query over the time shown."""
    empty = []
    for name, expr in dashboard_annotations():
        filled = substitute(expr, run_name, namespace)
        if not query_range(prom_url, filled, start, end):
            empty.append(f"{name}: {filled}")
    assert not empty, "annotation queries without data:\n" + "\n".join(empty)


def substitute(expr: str, run_name: str, namespace: str | None) -> str:
    """Grafana's variables, as Grafana fills them for one selected run (a regex-safe run name); unknown names
    stay, as Grafana leaves them."""
    assert re.fullmatch(r"[a-z0-9-]+", run_name), "run names in these checks need no regex escaping"
    values = {"run": run_name, "namespace": namespace or ".*", **INTERVALS}
    # as Grafana, leave what names no variable as it is (label_replace's "$1")
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)


def assert_dashboard_queries(prom_url: str, run_name: str, namespace: str | None = None,
                             at: float | None = None) -> None:
    """Every dashboard query (and variable query) returns data for `run_name`; failures listed together."""
    empty = []
    for title, expr in dashboard_targets():
        filled = substitute(expr, run_name, namespace)
        if not query(prom_url, filled, at):
            empty.append(f"{title}: {filled}")
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert match, variable["query"]
        series, label = substitute(match.group(1), run_name, namespace), match.group(2)
        params = urllib.parse.urlencode({"match[]": series})
        found = json.loads(http_get(f"{prom_url}/api/v1/label/{label}/values?{params}"))["data"]
        wanted = run_name if label == "job" else namespace
        if wanted is not None and wanted not in found:
            empty.append(f"variable {variable['name']}: {wanted!r} not in {found}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def alert_expressions() -> dict[str, str]:
    """Alert name -> expression, from the rule file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


def alert_result(prom_url: str, alert: str, run_name: str, at: float | None = None) -> list[dict[str, Any]]:
    """The alert's expression evaluated at `at`, restricted to the series of `run_name`."""
    return [s for s in query(prom_url, alert_expressions()[alert], at) if s["metric"].get("job") == run_name]
