"""The real trainer under torchrun (2 CPU processes, tiny Higgs Audio v2, bundled speech) pushes every
series of the docs/monitoring.md table to a real Pushgateway; a real Prometheus scrapes them, and every dashboard
and alert-rule expression returns data for the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env
from tests.monitoring.checks import assert_two_rank_run_reported
from tests.monitoring.conftest import Stack
from tests.monitoring.stack import LOOPBACK, free_port, push_external_series, push_sample_series

NAMESPACE = "ml-e2e"


@pytest.mark.slow
def test_real_two_process_training_run_reports_every_series(
    stack: Stack, run_name: str, base_args: dict[str, str], tmp_path: Path
) -> None:
    push_external_series(stack.gateway.url, run_name, NAMESPACE)
    options = base_args | {
        "run_name": run_name, "pushgateway_url": stack.gateway.url, "metrics_namespace": NAMESPACE,
        "metrics_push_interval_seconds": "0.25", "use_text_head": "true", "disable_eval": "false",
        "validation_split": "0.1", "eval_steps": "100", "save_steps": "100", "max_steps": "300",
        "logging_steps": "1", "learning_rate": "0.001",
    }
    env = clean_env(**{k.upper(): v for k, v in options.items()}, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_addr={LOOPBACK}",
         f"--master_port={free_port()}", "-m", "trainer", "train"],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    push_sample_series(stack.gateway.url, run_name, NAMESPACE)  # the sampling feature's, synthetic
    assert_two_rank_run_reported(stack.gateway, stack.prometheus.url, run_name, NAMESPACE, skipped_samples=0)
