"""The metrics layer (series, delivery, callback): logs to series, pushes to a real Pushgateway, and a bad gateway.

The gateway is Debian's `prometheus-pushgateway`, started on a free 127.0.0.1 port; the training runs are
real `transformers.Trainer` runs of a tiny model (tests/monitoring/tiny_run.py).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tests.monitoring.checks import documented_series
from tests.monitoring.stack import LOOPBACK, FlakyProxy, Pushgateway, free_port
from tests.monitoring.tiny_run import train, train_and_finish
from tests.tooling import require_tool
from trainer.config import values as config
from trainer.config.options import Config, MetricsArgs, TrainArgs
from trainer.errors import ConfigError
from trainer.metrics import delivery as push
from trainer.metrics import series as metrics
from trainer.metrics.callback import MetricsCallback, device_memory

REPO = Path(__file__).resolve().parents[3]
# bcrypt (cost 4) of "push-secret", for the gateway's basic-auth users
PASSWORD, PASSWORD_HASH = "push-secret", "$2b$04$4R7Tw9CV49vaqJei0AIkq./OdE28mVSLOCpOICsiDDGRojUfEJtlu"


def state(step: int = 3, max_steps: int = 10, epoch: float = 0.5) -> Any:
    return SimpleNamespace(global_step=step, max_steps=max_steps, epoch=epoch)


def sample(cb: MetricsCallback, name: str, **labels: str) -> float | None:
    """Current value of one series of `cb`, from whichever of its registries holds it."""
    for registry in (cb.job.registry, cb.job.success, cb.ranks.registry):
        found = registry.get_sample_value(name, labels)
        if found is not None:
            return found
    return None


def offline(rank: int = 0, **options: Any) -> MetricsCallback:
    return MetricsCallback(MetricsArgs(**options), "unit-run", rank=rank)


def fast(url: str, **options: Any) -> MetricsArgs:
    return MetricsArgs(pushgateway_url=url, metrics_push_interval_seconds=0.1,
                       metrics_push_timeout_seconds=1.0, **options)


def run_name() -> str:
    return f"u-{time.time_ns() % 10**12}"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    g = Pushgateway(tmp_path_factory.mktemp("gateway"))
    yield g
    g.stop()


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether `check()` holds within `timeout` seconds (pushes land a push interval later)."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def gateway_value(gateway: Pushgateway, name: str, **labels: str) -> float | None:
    """The value the gateway exposes for `name` with exactly these labels (plus its empty instance)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(gateway.text()):
        for s in family.samples:
            if s.name == name and s.labels == {"instance": "", **labels}:
                return s.value
    return None


# ---- logs and state -> series ---------------------------------------------------------------------
def test_on_log_sets_each_logged_value_on_its_series() -> None:
    cb = offline()
    logs = {"loss": 2.5, "audio_loss": 2.0, "text_loss": 0.5, "learning_rate": 1e-4, "grad_norm": 1.5,
            "samples_per_second": 8.0, "audio_seconds_per_second": 40.0, "tokens_per_second": 900.0,
            "nan_steps_skipped": 2.0,
            "eval_loss": 3.0, "eval_audio_loss": 2.8, "epoch": 0.5, "train_runtime": 12.0}
    cb.on_log(None, state(), None, logs=logs)
    for key, value in logs.items():
        if key not in ("epoch", "train_runtime"):
            assert sample(cb, f"higgs_trainer_{key}") == value, key
    assert sample(cb, "higgs_trainer_train_runtime") is None


def test_codebook_losses_are_labelled_by_codebook() -> None:
    cb = offline()
    cb.on_log(None, state(), None, logs={f"codebook_{i}_loss": float(i) + 0.5 for i in range(8)})
    assert [sample(cb, "higgs_trainer_codebook_loss", codebook=str(i)) for i in range(8)] == [
        i + 0.5 for i in range(8)
    ]


def test_checkpoint_log_records_step_time_duration_blocking_time_and_size() -> None:
    cb = offline()
    assert sample(cb, "higgs_trainer_last_checkpoint_step") is None  # absent before the first checkpoint
    before = time.time()
    cb.on_log(None, state(), None, logs={"checkpoint_step": 500.0, "checkpoint_seconds": 4.5,
                                         "checkpoint_blocking_seconds": 1.5, "checkpoint_bytes": 3e9})
    assert sample(cb, "higgs_trainer_last_checkpoint_step") == 500
    assert before <= sample(cb, "higgs_trainer_last_checkpoint_time_seconds") <= time.time()
    assert sample(cb, "higgs_trainer_last_checkpoint_duration_seconds") == 4.5
    assert sample(cb, "higgs_trainer_last_checkpoint_blocking_seconds") == 1.5
    assert sample(cb, "higgs_trainer_last_checkpoint_size_bytes") == 3e9


def test_skipped_samples_are_counted() -> None:
    cb = offline()
    cb.on_log(None, state(), None, logs={"skipped_samples": 7.0})
    assert sample(cb, "higgs_trainer_skipped_samples_total") == 7


def test_window_totals_add_up_in_their_counters_and_skipped_steps_count_their_rises() -> None:
    cb = offline()
    window = {"trained_samples": 32.0, "trained_tokens": 4000.0, "trained_audio_seconds": 80.0,
              "step_seconds": 6.0, "data_wait_seconds": 1.5}
    for skipped in (0.0, 2.0, 2.0, 5.0):  # the trainer logs the attempt's running count
        cb.on_log(None, state(), None, logs={**window, "nan_steps_skipped": skipped})
    for key, value in window.items():
        assert sample(cb, f"higgs_trainer_{key}_total") == 4 * value, key
    assert sample(cb, "higgs_trainer_nan_steps_skipped_total") == 5
    assert sample(cb, "higgs_trainer_nan_steps_skipped") == 5  # the deprecated gauge, still exported


def test_every_optimizer_step_is_counted_on_rank_zero() -> None:
    cb = offline()
    for step in range(1, 4):
        cb.on_step_end(None, state(step=step), None)
    assert sample(cb, "higgs_trainer_optimizer_steps_total") == 3


def test_step_end_records_progress() -> None:
    cb = offline()
    cb.on_step_end(None, state(step=40, max_steps=100, epoch=1.25), None)
    assert (sample(cb, "higgs_trainer_global_step"), sample(cb, "higgs_trainer_max_steps")) == (40, 100)
    assert sample(cb, "higgs_trainer_epoch") == 1.25
    assert time.time() - sample(cb, "higgs_trainer_last_progress_time_seconds") < 5


def test_status_starts_running_and_finish_moves_it() -> None:
    cb = offline()
    assert sample(cb, "higgs_trainer_run_status", status="running") == 1
    assert cb.finish("succeeded")
    states = [sample(cb, "higgs_trainer_run_status", status=s) for s in ("running", "succeeded", "failed")]
    assert states == [0, 1, 0]
    assert time.time() - sample(cb, "higgs_trainer_last_success_time_seconds") < 5


def test_each_exit_code_gives_its_final_status_and_is_exported() -> None:
    from trainer import errors
    from trainer.metrics.callback import status_of

    assert {code: status_of(code) for code in errors.TABLE} == {
        0: "succeeded", 1: "failed", 2: "failed", 3: "failed", 4: "failed", 5: "failed", 6: "failed",
        130: "stopped", 143: "stopped", 160: "failed",
    }
    cb = offline()
    assert sample(cb, "higgs_trainer_exit_code") is None  # absent while running
    cb.finish(status_of(143), 143)
    states = {s: sample(cb, "higgs_trainer_run_status", status=s) for s in metrics.STATUSES}
    assert states == {"running": 0, "succeeded": 0, "failed": 0, "stopped": 1}
    assert sample(cb, "higgs_trainer_exit_code") == 143
    assert sample(cb, "higgs_trainer_last_success_time_seconds") is None


def test_unknown_final_status_counts_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    cb = offline()
    cb.finish("cancelled")  # type: ignore[arg-type]
    assert sample(cb, "higgs_trainer_run_status", status="failed") == 1
    assert sample(cb, "higgs_trainer_last_success_time_seconds") is None
    assert "unknown final status 'cancelled'" in caplog.text


def test_second_finish_changes_nothing() -> None:
    cb = offline()
    cb.finish("failed")
    cb.finish("succeeded")
    assert sample(cb, "higgs_trainer_run_status", status="failed") == 1


def test_device_memory_on_cpu_is_the_resident_set_within_the_host() -> None:
    used, peak, total = device_memory(torch.device("cpu"))
    assert 10e6 < used <= peak <= total


def test_rank_series_carry_the_rank_and_the_pod() -> None:
    cb = offline(rank=3)
    assert sample(cb, "higgs_trainer_rank_info", rank="3", pod=socket.gethostname()) == 1
    assert sample(cb, "higgs_trainer_device_memory_used_bytes", rank="3") > 0
    assert sample(cb, "higgs_trainer_push_failures_total", rank="3") == 0
    assert sample(cb, "higgs_trainer_push_failure_time_seconds", rank="3") == 0


def test_docs_table_lists_exactly_the_exported_series() -> None:
    cb = offline()
    cb.on_step_end(None, state(), None)
    cb.on_log(None, state(), None, logs={key: 1.0 for key in (
        "loss", "audio_loss", "text_loss", "codebook_0_loss", "eval_loss", "eval_audio_loss", "learning_rate",
        "grad_norm", "samples_per_second", "audio_seconds_per_second", "tokens_per_second", "checkpoint_step",
        "skipped_samples", "nan_steps_skipped", "trained_samples", "trained_tokens", "trained_audio_seconds",
        "step_seconds", "data_wait_seconds",
        "sample_wer", "sample_cer", "sample_speaker_similarity", "sample_step", "generated_clips", "sample_failures")})
    cb.finish("succeeded", 0)
    exported = {
        s.name for registry in (cb.job.registry, cb.job.success, cb.ranks.registry)
        for family in registry.collect() for s in family.samples if not s.name.endswith("_created")
    }
    documented = documented_series()
    assert exported == set(documented)
    for name, row in documented.items():
        assert row["type"] == ("counter" if name.endswith("_total") else "gauge"), name


# ---- configuration ---------------------------------------------------------------------------------
def test_from_config_takes_the_run_name_or_the_output_dir_name_and_the_rank(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: Path) -> None:
    monkeypatch.setenv("RANK", "2")
    cfg = Config(train=TrainArgs(output_dir=str(tmp_path / "my-run")))
    cb = MetricsCallback.from_config(cfg)
    assert (cb.run_name, cb.rank, cb.is_main) == ("my-run", 2, False)
    cfg.train.run_name = "job-from-chart"
    assert MetricsCallback.from_config(cfg, rank=0).run_name == "job-from-chart"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pushgateway_url": "pushgateway:9091"}, "expected http://"),
        ({"pushgateway_username": "trainer"}, "go together"),
        ({"pushgateway_password": "x"}, "go together"),
    ],
)
def test_metrics_options_reject_a_bad_url_and_half_basic_auth(options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MetricsArgs(**options)


def test_metrics_options_are_read_from_their_environment_variables() -> None:
    envs = {s.env: s for s in config.option_specs() if s.group == "metrics"}
    wanted = {"PUSHGATEWAY_URL", "METRICS_PORT", "METRICS_DELETE_ON_FINISH", "PUSHGATEWAY_PASSWORD"}
    assert wanted <= envs.keys()
    assert config.parse_value(envs["METRICS_DELETE_ON_FINISH"], "true", "METRICS_DELETE_ON_FINISH") is True
    with pytest.raises(ConfigError, match="METRICS_PORT"):
        config.parse_value(envs["METRICS_PORT"], "70000", "METRICS_PORT")


# ---- pushing to a real Pushgateway -----------------------------------------------------------------
def test_pushes_reach_the_job_group_and_one_group_per_rank(gateway: Pushgateway) -> None:
    run = run_name()
    ranks = [MetricsCallback(fast(gateway.url, metrics_namespace="ml"), run, rank=r) for r in (0, 1)]
    for cb in ranks:
        cb.on_step_end(None, state(step=5), None)
        cb.on_log(None, state(step=5), None, logs={"loss": 1.25})
    for cb in ranks:
        assert cb.finish("succeeded")
    groups = sorted(gateway.group_labels(run), key=lambda g: (g.get("rank", ""), g.get("outcome", "")))
    assert groups == [{"job": run, "namespace": "ml"}, {"job": run, "namespace": "ml", "outcome": "succeeded"},
                      {"job": run, "namespace": "ml", "rank": "0"}, {"job": run, "namespace": "ml", "rank": "1"}]
    assert gateway_value(gateway, "higgs_trainer_loss", job=run, namespace="ml") == 1.25
    status = gateway_value(gateway, "higgs_trainer_run_status", job=run, namespace="ml", status="succeeded")
    assert status == 1
    assert gateway_value(gateway, "higgs_trainer_rank_info", job=run, namespace="ml", rank="1",
                         pod=socket.gethostname()) == 1


def test_periodic_pushes_carry_progress_while_training(gateway: Pushgateway) -> None:
    run = run_name()
    cb = MetricsCallback(fast(gateway.url), run)
    cb.on_step_end(None, state(step=7), None)
    assert eventually(lambda: gateway_value(gateway, "higgs_trainer_global_step", job=run) == 7)
    assert gateway_value(gateway, "higgs_trainer_run_status", job=run, status="running") == 1
    cb.finish("failed")


def test_failed_run_keeps_the_last_success_of_an_earlier_run(gateway: Pushgateway) -> None:
    run = run_name()
    assert MetricsCallback(fast(gateway.url), run).finish("succeeded")
    succeeded_at = gateway_value(gateway, "higgs_trainer_last_success_time_seconds", job=run, outcome="succeeded")
    assert succeeded_at is not None
    assert MetricsCallback(fast(gateway.url), run).finish("failed")
    assert gateway_value(gateway, "higgs_trainer_run_status", job=run, status="failed") == 1
    assert gateway_value(gateway, "higgs_trainer_last_success_time_seconds", job=run,
                         outcome="succeeded") == succeeded_at


def test_a_new_attempt_replaces_what_the_previous_attempt_left_in_the_gateway(gateway: Pushgateway) -> None:
    run = run_name()
    assert MetricsCallback(fast(gateway.url), run).finish("succeeded")
    succeeded_at = gateway_value(gateway, "higgs_trainer_last_success_time_seconds", job=run, outcome="succeeded")
    first = MetricsCallback(fast(gateway.url), run)
    first.on_log(None, state(), None, logs={"loss": float("nan"), "checkpoint_step": 40, "checkpoint_seconds": 2.0,
                                            "checkpoint_bytes": 1e6})
    first.on_step_end(None, state(step=42), None)
    assert first.finish("stopped", 143)
    assert gateway_value(gateway, "higgs_trainer_exit_code", job=run) == 143
    assert gateway_value(gateway, "higgs_trainer_last_checkpoint_time_seconds", job=run) is not None

    second = MetricsCallback(fast(gateway.url), run)  # the restart, still loading the model
    assert eventually(lambda: gateway_value(gateway, "higgs_trainer_run_status", job=run, status="running") == 1)
    left = {name: gateway_value(gateway, name, job=run) for name in (
        "higgs_trainer_exit_code", "higgs_trainer_last_checkpoint_time_seconds", "higgs_trainer_loss",
        "higgs_trainer_global_step", "higgs_trainer_last_progress_time_seconds")}
    assert left == dict.fromkeys(left)  # nothing of the stopped attempt reads as this one's
    assert gateway_value(gateway, "higgs_trainer_last_success_time_seconds", job=run,
                         outcome="succeeded") == succeeded_at
    second.on_step_end(None, state(step=43), None)
    assert eventually(lambda: gateway_value(gateway, "higgs_trainer_global_step", job=run) == 43)
    second.on_log(None, state(step=43), None, logs={"loss": 2.5})
    assert eventually(lambda: gateway_value(gateway, "higgs_trainer_loss", job=run) == 2.5)
    assert gateway_value(gateway, "higgs_trainer_global_step", job=run) == 43  # later pushes add, not replace
    second.finish("failed", 1)


def test_the_first_push_that_arrives_replaces_even_after_the_gateway_was_unreachable(
    gateway: Pushgateway,
) -> None:
    run = run_name()
    first = MetricsCallback(fast(gateway.url), run)
    first.on_log(None, state(), None, logs={"checkpoint_step": 10})
    assert first.finish("stopped", 143)
    proxy = FlakyProxy((LOOPBACK, gateway.port), hang=True)
    try:
        second = MetricsCallback(MetricsArgs(pushgateway_url=proxy.url, metrics_push_interval_seconds=0.1,
                                             metrics_push_timeout_seconds=0.2), run)
        assert eventually(lambda: (sample(second, "higgs_trainer_push_failures_total", rank="0") or 0) >= 1)
        proxy.hang = False
        assert eventually(lambda: gateway_value(gateway, "higgs_trainer_run_status", job=run, status="running") == 1)
        assert gateway_value(gateway, "higgs_trainer_exit_code", job=run) is None
        assert gateway_value(gateway, "higgs_trainer_last_checkpoint_step", job=run) is None
        second.finish("failed", 1)
    finally:
        proxy.close()


def test_delete_on_finish_leaves_only_the_last_success_of_the_run(gateway: Pushgateway) -> None:
    run = run_name()
    ranks = [MetricsCallback(fast(gateway.url, metrics_delete_on_finish=True, metrics_namespace="ml"), run, r)
             for r in (0, 1)]
    assert eventually(lambda: len(gateway.group_labels(run)) == 3)  # there is something to delete
    assert [cb.finish("succeeded") for cb in ranks] == [True, True]
    # the gateway answers a delete with 202 Accepted and applies it a moment later
    assert eventually(lambda: gateway.group_labels(run) == [{"job": run, "namespace": "ml", "outcome": "succeeded"}])
    assert gateway_value(gateway, "higgs_trainer_last_success_time_seconds", job=run, namespace="ml",
                         outcome="succeeded") is not None


def test_delete_on_finish_keeps_the_groups_of_a_failed_run(gateway: Pushgateway) -> None:
    run = run_name()
    cb = MetricsCallback(fast(gateway.url, metrics_delete_on_finish=True), run)
    assert cb.finish("failed")
    assert sorted(g.get("rank", "") for g in gateway.group_labels(run)) == ["", "0"]
    assert gateway_value(gateway, "higgs_trainer_run_status", job=run, status="failed") == 1


# ---- a gateway that is down or hangs ---------------------------------------------------------------
def weights(trainer: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Weights after the tiny run without any metrics."""
    trainer = train(tmp_path_factory.mktemp("baseline"), [], max_steps=6)
    assert trainer.state.global_step == 6
    return weights(trainer)


def timed(method: Callable[..., Any], durations: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - started)

    return wrapper


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["down", "hanging"])
def test_bad_gateway_changes_nothing_in_training_and_is_counted_and_logged(
    failure: str, baseline: dict[str, torch.Tensor], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(push, "RETRY_BACKOFF_SECONDS", 0.1)
    proxy = FlakyProxy(None, hang=True) if failure == "hanging" else None
    url = proxy.url if proxy else f"http://{LOOPBACK}:{free_port()}"  # nothing listens there
    timeout = 0.5
    cb = MetricsCallback(MetricsArgs(pushgateway_url=url, metrics_push_interval_seconds=0.1,
                                     metrics_push_timeout_seconds=timeout), run_name())
    durations: list[float] = []
    for event in ("on_step_end", "on_log", "on_train_begin", "on_prediction_step"):
        setattr(cb, event, timed(getattr(cb, event), durations))
    caplog.set_level(logging.WARNING, logger="trainer.metrics.delivery")
    try:
        trainer = train(tmp_path, [cb], max_steps=6, step_seconds=0.2)
        assert trainer.state.global_step == 6
        assert all(torch.equal(weights(trainer)[k], v) for k, v in baseline.items())
        # A callback that waited for the gateway would take the whole timeout; half of it leaves room for a
        # loaded machine.
        assert max(durations) < 0.5 * timeout, "a callback waited for the gateway"
        started = time.monotonic()
        assert cb.finish("succeeded") is False
        # the final push is retried, within its bound: a push in flight (2 groups), then 3 attempts of the
        # 3 groups a success pushes (job, rank, last success)
        assert time.monotonic() - started < 2 * timeout + 3 * 3 * timeout + 0.1 * 3 + 1
    finally:
        if proxy:
            proxy.close()
    assert sample(cb, "higgs_trainer_push_failures_total", rank="0") >= 2
    assert time.time() - sample(cb, "higgs_trainer_push_failure_time_seconds", rank="0") < 30
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"push to {url} failed" in w for w in warnings)
    assert any("final push" in w and "failed 3 times" in w for w in warnings)
    # warned once when pushes started failing, not once per failed push
    assert sum("training goes on" in w for w in warnings) == 1


def test_a_run_that_fails_still_pushes_its_final_status(gateway: Pushgateway, tmp_path: Path) -> None:
    run = run_name()
    with pytest.raises(RuntimeError, match="injected failure"):
        train_and_finish(tmp_path, MetricsCallback(fast(gateway.url), run), max_steps=6, fail_at_step=2)
    assert gateway_value(gateway, "higgs_trainer_run_status", job=run, status="failed") == 1
    assert gateway_value(gateway, "higgs_trainer_global_step", job=run) == 2


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_pushes_stopped_and_exit_code_143(gateway: Pushgateway, base_args,
                                                                   tmp_path: Path) -> None:
    """The real CLI under SIGTERM: its final push says "stopped" (a restart resumes), not "failed"."""
    import signal

    from tests.conftest import clean_env
    from tests.processes import trainer_process

    run = run_name()
    values = base_args | {"max_steps": "100000", "save_steps": "100000", "logging_steps": "1",
                          "pushgateway_url": gateway.url, "run_name": run, "metrics_push_interval_seconds": "0.2"}
    env = clean_env(**{k.upper(): v for k, v in values.items()}, OMP_NUM_THREADS="1")
    with trainer_process("train", env, tmp_path / "train.log") as run_proc:
        run_proc.wait_for_log("{'loss'", timeout=240, interval=0.05)
        run_proc.proc.send_signal(signal.SIGTERM)
        code = run_proc.proc.wait(timeout=120)
    assert code == 143, run_proc.log_text()[-3000:]
    assert gateway_value(gateway, "higgs_trainer_run_status", job=run, status="stopped") == 1
    assert gateway_value(gateway, "higgs_trainer_run_status", job=run, status="failed") == 0
    assert gateway_value(gateway, "higgs_trainer_exit_code", job=run) == 143


# ---- basic auth and TLS ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secure_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pushgateway, Path]]:
    """A Pushgateway on https with basic auth, its certificate signed by a CA made here."""
    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", f"/CN={LOOPBACK}")
    (d / "san.cnf").write_text(f"subjectAltName=IP:{LOOPBACK}\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "san.cnf")
    (d / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {d / 'server.crt'}\n  key_file: {d / 'server.key'}\n"
        f"basic_auth_users:\n  trainer: '{PASSWORD_HASH}'\n"
    )
    g = Pushgateway(d / "gateway", web_config=d / "web.yml")
    yield g, d / "ca.crt"
    g.stop()


@pytest.mark.parametrize(
    ("password", "use_ca", "skip_verify", "works"),
    [
        (PASSWORD, True, False, True),
        (PASSWORD, False, True, True),
        ("wrong", True, False, False),
        (PASSWORD, False, False, False),  # the test CA is not among the system CAs
    ],
)
def test_basic_auth_and_tls_against_a_gateway_that_requires_them(
    secure_gateway: tuple[Pushgateway, Path], password: str, use_ca: bool, skip_verify: bool, works: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(push, "RETRY_BACKOFF_SECONDS", 0.1)
    g, ca = secure_gateway
    url = f"https://{LOOPBACK}:{g.port}"
    args = MetricsArgs(pushgateway_url=url, metrics_push_interval_seconds=60, metrics_push_timeout_seconds=2,
                       pushgateway_username="trainer", pushgateway_password=password,
                       pushgateway_tls_ca_file=str(ca) if use_ca else None,
                       pushgateway_tls_insecure_skip_verify=skip_verify)
    cb = MetricsCallback(args, run_name())
    assert cb.finish("succeeded") is works
    assert (sample(cb, "higgs_trainer_push_failures_total", rank="0") == 0) is works


# ---- the /metrics server ---------------------------------------------------------------------------
def test_metrics_server_serves_rank_zero_series_labelled_with_the_run() -> None:
    port = free_port()
    cb = offline(metrics_port=port, metrics_bind_address=LOOPBACK, metrics_namespace="ml")
    try:
        cb.on_step_end(None, state(step=9), None)
        text = urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5).read().decode()
    finally:
        cb.finish("succeeded")
    assert 'higgs_trainer_global_step{job="unit-run",namespace="ml"} 9.0' in text
    assert 'higgs_trainer_device_memory_used_bytes{job="unit-run",namespace="ml",rank="0"}' in text
    with pytest.raises(OSError):  # finish stopped the server
        urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=2)


def test_metrics_server_runs_on_rank_zero_only() -> None:
    port = free_port()
    cb = offline(rank=1, metrics_port=port, metrics_bind_address=LOOPBACK)
    try:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=2)
    finally:
        cb.finish("succeeded")


def test_a_taken_metrics_port_is_logged_and_training_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cb = offline(metrics_port=port, metrics_bind_address=LOOPBACK)
        cb.on_step_end(None, state(step=1), None)
        assert cb.finish("succeeded")
    assert f"cannot serve /metrics on {LOOPBACK}:{port}" in caplog.text
