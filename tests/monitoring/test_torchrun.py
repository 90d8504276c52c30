"""A two-process torchrun run (gloo on loopback) pushes job and rank series that Prometheus scrapes.

The tiny `transformers.Trainer` of tiny_run.py stands in for the Higgs trainer here; the e2e test of the
real trainer calls the same `assert_run_metrics` and `assert_dashboard_queries`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.monitoring.checks import assert_two_rank_run_reported
from tests.monitoring.conftest import Stack
from tests.monitoring.stack import LOOPBACK, REPO, free_port, push_external_series, push_sample_series

NAMESPACE = "ml-test"


@pytest.mark.slow
def test_two_process_torchrun_run_reports_every_series(stack: Stack, run_name: str, tmp_path: Path) -> None:
    push_external_series(stack.gateway.url, run_name, NAMESPACE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_addr={LOOPBACK}",
         f"--master_port={free_port()}", str(REPO / "tests" / "monitoring" / "tiny_run.py"),
         "--output_dir", str(tmp_path / "out"), "--run_name", run_name,
         "--pushgateway_url", stack.gateway.url, "--metrics_namespace", NAMESPACE,
         "--max_steps", "8", "--step_seconds", "0.25"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    push_sample_series(stack.gateway.url, run_name, NAMESPACE)  # the sampling feature's, synthetic
    assert_two_rank_run_reported(stack.gateway, stack.prometheus.url, run_name, NAMESPACE, skipped_samples=2)
