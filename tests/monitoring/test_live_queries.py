"""Real training runs pushed to a real Pushgateway and scraped by a real Prometheus.

Each scenario is a tiny `transformers.Trainer` run reporting through `MetricsCallback`. On them: every
documented series is there, every dashboard query returns data, and every alert expression returns data
in the scenario it is for (evaluated at a later time when the alert is about time passing) and none for
a healthy run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import TrainerCallback

from tests.monitoring.checks import (
    alert_expressions,
    alert_result,
    assert_annotation_queries,
    assert_dashboard_queries,
    assert_run_metrics,
    dashboard_targets,
    substitute,
)
from tests.monitoring.conftest import Stack
from tests.monitoring.stack import (
    DCGM_EXPORTER_POD,
    REPO,
    FlakyProxy,
    Prometheus,
    free_port,
    http_get,
    push_external_series,
    push_sample_series,
)
from tests.monitoring.tiny_run import train, train_and_finish
from trainer import errors
from trainer.config.options import MetricsArgs
from trainer.metrics.callback import MetricsCallback, status_of

pytestmark = pytest.mark.slow

NAMESPACE = "ml-test"
MAX_STEPS = 8
MINUTE = 60.0


def callback(url: str, run_name: str, **overrides: object) -> MetricsCallback:
    options = {"pushgateway_url": url, "metrics_namespace": NAMESPACE, "metrics_push_interval_seconds": 0.2,
               "metrics_push_timeout_seconds": 2.0, **overrides}
    args = MetricsArgs(**options)
    return MetricsCallback(args, run_name, rank=0)


def new_run() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def healthy(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A run that trains, evaluates, checkpoints and succeeds; its final status is scraped on return."""
    run = new_run()
    push_external_series(stack.gateway.url, run, NAMESPACE)
    train_and_finish(tmp_path_factory.mktemp("healthy"), callback(stack.gateway.url, run),
                     max_steps=MAX_STEPS, step_seconds=0.25)
    stack.prometheus.wait_for(f'higgs_trainer_run_status{{job="{run}", status="succeeded"}} == 1')
    push_sample_series(stack.gateway.url, run, NAMESPACE)
    stack.prometheus.wait_for(f'DCGM_FI_DEV_GPU_UTIL{{job="dcgm-{run}"}}')
    # the pushed values, not the trainer's own zero-valued counter, must have been scraped (twice, for rates)
    stack.prometheus.wait_for(f'count_over_time(higgs_trainer_sample_step{{job="{run}"}}[1m]) > 1')
    return run


def test_healthy_run_has_every_documented_series(stack: Stack, healthy: str) -> None:
    assert_run_metrics(stack.prometheus.url, healthy, namespace=NAMESPACE, codebooks=2, skipped_samples=2)


def test_every_dashboard_query_returns_data_for_a_run(stack: Stack, healthy: str) -> None:
    assert_dashboard_queries(stack.prometheus.url, healthy, NAMESPACE)


def test_gpu_panels_join_dcgm_series_of_either_label_shape(stack: Stack, healthy: str) -> None:
    """GPU 0 was pushed with the pod as `pod`, GPU 1 with it as `exported_pod` (the exporter's own pod in
    `pod`): both must come out of each GPU panel, under the trainer's pod."""
    for title, expr in [(t, e) for t, e in dashboard_targets() if "DCGM_" in e]:
        result = stack.prometheus.query(substitute(expr, healthy, NAMESPACE))
        assert sorted((r["metric"]["gpu"], r["metric"]["pod"]) for r in result) == [
            ("0", socket.gethostname()), ("1", socket.gethostname())], (title, result)
        assert DCGM_EXPORTER_POD not in str(result)


def test_every_annotation_query_marks_a_restarted_run(stack: Stack, tmp_path: Path) -> None:
    """Two attempts of one run (the first stopped by a signal, as a preemption does), a container restart
    reported by kube-state-metrics between them, checkpoints in both: every annotation has marks."""
    run = new_run()
    start = time.time()
    push_external_series(stack.gateway.url, run, NAMESPACE, restarts=0)
    first = callback(stack.gateway.url, run)
    train(tmp_path / "a", [first, _StopAt(4)], max_steps=MAX_STEPS, step_seconds=0.25)
    first.finish(status_of(errors.PREEMPTED), errors.PREEMPTED)
    stack.prometheus.wait_for(f'higgs_trainer_run_status{{job="{run}", status="stopped"}} == 1')
    push_external_series(stack.gateway.url, run, NAMESPACE, restarts=1)
    train_and_finish(tmp_path / "b", callback(stack.gateway.url, run), max_steps=MAX_STEPS, step_seconds=0.25)
    stack.prometheus.wait_for(f'higgs_trainer_run_status{{job="{run}", status="succeeded"}} == 1')
    assert_annotation_queries(stack.prometheus.url, run, NAMESPACE, start, time.time() + 1.0)


@pytest.mark.parametrize("minutes_later", [0, 20, 130])
def test_no_alert_fires_for_a_healthy_run(stack: Stack, healthy: str, minutes_later: int) -> None:
    at = time.time() + minutes_later * MINUTE
    fired = {a: alert_result(stack.prometheus.url, a, healthy, at) for a in alert_expressions()}
    assert fired == {a: [] for a in fired}


def test_rules_are_loaded_and_evaluate_without_errors_in_prometheus(stack: Stack) -> None:
    def health() -> dict[str, str]:
        groups = json.loads(http_get(stack.prometheus.url + "/api/v1/rules"))["data"]["groups"]
        return {r["name"]: r["health"] for g in groups for r in g["rules"]}

    deadline = time.monotonic() + 20
    while "unknown" in health().values() and time.monotonic() < deadline:  # not evaluated yet
        time.sleep(0.2)
    assert health() == {alert: "ok" for alert in alert_expressions()}


@pytest.fixture(scope="module")
def crashed(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, float]:
    """A run whose process died after training without `finish` (a killed pod): it still says running."""
    run = new_run()
    out = tmp_path_factory.mktemp("crashed")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "monitoring" / "tiny_run.py"), "--output_dir", str(out),
         "--run_name", run, "--pushgateway_url", stack.gateway.url, "--metrics_namespace", NAMESPACE,
         "--max_steps", "4", "--step_seconds", "0.05", "--crash_after_training"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    stack.prometheus.wait_for(f'higgs_trainer_global_step{{job="{run}"}} == 4')
    return run, time.time()


def test_stall_alert_fires_when_a_running_run_stops_pushing(stack: Stack, crashed: tuple[str, float]) -> None:
    run, died = crashed
    url = stack.prometheus.url
    assert alert_result(url, "HiggsTrainerRunStalled", run, died) == []
    # 16 minutes later only the "no push for 15 minutes" half holds; 31 minutes later both halves do
    for minutes in (16, 31):
        result = alert_result(url, "HiggsTrainerRunStalled", run, died + minutes * MINUTE)
        assert [r["metric"].get("namespace") for r in result] == [NAMESPACE], minutes


def test_no_checkpoint_alert_fires_two_hours_after_the_last_checkpoint(stack: Stack,
                                                                       crashed: tuple[str, float]) -> None:
    run, died = crashed
    assert alert_result(stack.prometheus.url, "HiggsTrainerNoCheckpoint", run, died + 110 * MINUTE) == []
    assert len(alert_result(stack.prometheus.url, "HiggsTrainerNoCheckpoint", run, died + 121 * MINUTE)) == 1


def test_failed_run_fires_run_failed_and_reports_failed(stack: Stack, tmp_path: Path) -> None:
    run = new_run()
    with pytest.raises(RuntimeError, match="injected failure"):
        train_and_finish(tmp_path, callback(stack.gateway.url, run), max_steps=MAX_STEPS, fail_at_step=6,
                         step_seconds=0.25)
    assert_run_metrics(stack.prometheus.url, run, namespace=NAMESPACE, status="failed")
    assert len(alert_result(stack.prometheus.url, "HiggsTrainerRunFailed", run)) == 1
    assert alert_result(stack.prometheus.url, "HiggsTrainerRunStalled", run, time.time() + 31 * MINUTE) == []


class _StopAt(TrainerCallback):
    """Ends training at `step`, as `StopOnSignal` does after a SIGTERM (its checkpoint is the step's)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_a_run_stopped_by_a_signal_reports_stopped_and_fires_only_the_not_resumed_alert(stack: Stack,
                                                                                       tmp_path: Path) -> None:
    run = new_run()
    cb = callback(stack.gateway.url, run)
    train(tmp_path, [cb, _StopAt(MAX_STEPS // 2)], max_steps=MAX_STEPS, step_seconds=0.25)
    cb.finish(status_of(errors.PREEMPTED), errors.PREEMPTED)  # what run.main does after a SIGTERM
    got = assert_run_metrics(stack.prometheus.url, run, namespace=NAMESPACE, status="stopped")
    assert [float(s["value"][1]) for s in got["higgs_trainer_exit_code"]] == [143.0]
    url, later = stack.prometheus.url, time.time() + 31 * MINUTE
    assert alert_result(url, "HiggsTrainerRunFailed", run) == []
    assert alert_result(url, "HiggsTrainerRunStalled", run, later) == []
    # the expression holds from the stop on; its `for: 30m` is in the promtool unit tests
    assert len(alert_result(url, "HiggsTrainerRunStoppedNotResumed", run, later)) == 1


def test_nan_loss_fires_loss_not_finite(stack: Stack, tmp_path: Path) -> None:
    run = new_run()
    train_and_finish(tmp_path, callback(stack.gateway.url, run), max_steps=6, nan_from_call=4)
    stack.prometheus.wait_for(f'higgs_trainer_run_status{{job="{run}", status="succeeded"}} == 1')
    result = alert_result(stack.prometheus.url, "HiggsTrainerLossNotFinite", run)
    fired = {r["metric"]["series"] for r in result}
    assert {"higgs_trainer_loss", "higgs_trainer_audio_loss", "higgs_trainer_codebook_loss"} <= fired


def test_steps_skipped_for_a_nan_loss_fire_steps_skipped(stack: Stack, tmp_path: Path) -> None:
    run = new_run()
    train_and_finish(tmp_path, callback(stack.gateway.url, run), max_steps=MAX_STEPS, skip_from_step=5,
                     step_seconds=0.25)
    stack.prometheus.wait_for(f'higgs_trainer_nan_steps_skipped_total{{job="{run}"}} == {MAX_STEPS - 4}')
    result = alert_result(stack.prometheus.url, "HiggsTrainerStepsSkipped", run)
    # the rise Prometheus saw: from the lowest count it scraped (0 unless a scrape came late) to 4
    assert len(result) == 1 and 0 < float(result[0]["value"][1]) <= MAX_STEPS - 4, result
    # half an hour without a new skip: silent again
    assert alert_result(stack.prometheus.url, "HiggsTrainerStepsSkipped", run, time.time() + 31 * MINUTE) == []


def test_pushes_that_timed_out_fire_pushes_failing_once_delivered(stack: Stack, tmp_path: Path) -> None:
    run = new_run()
    proxy = FlakyProxy(("127.0.0.1", stack.gateway.port), hang=True)
    try:
        cb = callback(proxy.url, run, metrics_push_timeout_seconds=0.3)
        train(tmp_path, [cb], max_steps=4, step_seconds=0.1)
        proxy.hang = False  # the gateway is reachable again for the final push
        assert cb.finish("succeeded", errors.OK)
    finally:
        proxy.close()
    got = assert_run_metrics(stack.prometheus.url, run, namespace=NAMESPACE, push_failures=None,
                             min_step_values=1)
    assert float(got["higgs_trainer_push_failures_total"][0]["value"][1]) > 0
    assert len(alert_result(stack.prometheus.url, "HiggsTrainerPushesFailing", run)) == 1
    later = time.time() + 16 * MINUTE
    assert alert_result(stack.prometheus.url, "HiggsTrainerPushesFailing", run, later) == []


def test_pushes_the_gateway_rejects_fire_pushes_failing(fresh_stack: Stack, tmp_path: Path) -> None:
    # another job pushed higgs_trainer_grad_norm as a counter: the gateway now rejects our job group
    conflicting = b"# TYPE higgs_trainer_grad_norm counter\nhiggs_trainer_grad_norm 1\n"
    urllib.request.urlopen(urllib.request.Request(f"{fresh_stack.gateway.url}/metrics/job/other", conflicting,
                                                  method="POST"), timeout=5).close()
    run = new_run()
    cb = callback(fresh_stack.gateway.url, run)
    train(tmp_path, [cb], max_steps=3)
    assert not cb.finish("succeeded", errors.OK)
    fresh_stack.prometheus.wait_for(f'push_failure_time_seconds{{job="{run}"}} > 0')
    result = alert_result(fresh_stack.prometheus.url, "HiggsTrainerPushesFailing", run)
    # the gateway's own record of the rejected job group (no rank label); rank 0 also counted the
    # failures itself and says so from its rank group
    assert sorted(str(r["metric"].get("rank")) for r in result) == ["0", "None"]


@pytest.fixture
def scrape_stack(tmp_path: Path) -> Iterator[tuple[Prometheus, int]]:
    port = free_port()
    prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"])
    yield prometheus, port
    prometheus.stop()


def test_metrics_endpoint_scraped_with_honor_labels_gives_the_pushed_labels(
    scrape_stack: tuple[Prometheus, int], tmp_path: Path
) -> None:
    prometheus, port = scrape_stack
    run = new_run()
    args = MetricsArgs(metrics_port=port, metrics_bind_address="127.0.0.1", metrics_namespace=NAMESPACE)
    cb = MetricsCallback(args, run, rank=0)
    try:
        train(tmp_path, [cb], max_steps=4)
        sel = f'job="{run}", namespace="{NAMESPACE}"'
        prometheus.wait_for(f"higgs_trainer_global_step{{{sel}}} == 4")
        prometheus.wait_for(f'higgs_trainer_device_memory_used_bytes{{{sel}, rank="0"}} > 0')
        assert alert_result(prometheus.url, "HiggsTrainerRunStalled", run, time.time() + 31 * MINUTE)
    finally:
        assert cb.finish("succeeded", errors.OK)
