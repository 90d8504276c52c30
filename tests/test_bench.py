"""The benchmarks run and print the figures their docstrings promise (at toy sizes: speed is not
asserted here; the numbers come from full-size runs, see the README)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import clean_env
from tests.tooling import REPO

TOY = ["--hidden_size", "32", "--num_layers", "1", "--num_codebooks", "2", "--steps", "6"]


def _run(script: str, *args: str, tmp_path) -> dict:
    proc = subprocess.run([sys.executable, script, *args], cwd=REPO / "bench", env=clean_env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{\n"):])


def test_padding_benchmark_reports_both_orders(tmp_path) -> None:
    out = _run("bench_padding.py", "--samples", "800", "--epochs", "1", tmp_path=tmp_path)
    assert 0 < out["real_fraction_random"] < out["real_fraction_length_grouped"] <= 1


@pytest.mark.slow
def test_trainer_overhead_benchmark_reports_a_ratio(tmp_path) -> None:
    out = _run("bench_trainer_overhead.py", *TOY, "--rounds", "1", "--workdir", str(tmp_path), tmp_path=tmp_path)
    assert out["throughput_ratio"] > 0 and out["ours_step_seconds"] > 0 and out["baseline_step_seconds"] > 0


@pytest.mark.slow
def test_checkpoint_benchmark_reports_lora_smaller_than_full(tmp_path) -> None:
    out = _run("bench_checkpoint.py", *TOY, "--saves", "1", "--workdir", str(tmp_path), tmp_path=tmp_path)
    assert out["lora"]["bytes"] < out["full"]["bytes"] and out["lora"]["adapter_bytes"] > 0
