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


GPU_VARIANTS = ("baseline", "lora", "weight_dtype", "optimizer", "gradient_checkpointing", "eager", "flash_attention_2")


def test_gpu_benchmark_tiny_preset_runs_every_variant_on_cpu(tmp_path) -> None:
    out_file = tmp_path / "gpu.json"
    out = _run("bench_gpu.py", "--preset", "tiny", "--variants", ",".join(GPU_VARIANTS), "--out", str(out_file),
               tmp_path=tmp_path)
    assert json.loads(out_file.read_text()) == out  # the file holds the same, complete result
    assert out["complete"] and out["device"] == "cpu" and out["peak_tflops"] is None
    batch = out["batch"]
    assert batch["target_frames"] == 50  # 2 s at 25 frames/s
    assert batch["sequence_length"] == batch["text_tokens"] + batch["target_frames"] + 2 + 7  # BOS, EOS, delay
    assert batch["tokens_per_step"] == batch["sequence_length"] * batch["samples_per_step"]
    assert set(out["variants"]) == set(GPU_VARIANTS)
    for name in GPU_VARIANTS:
        v = out["variants"][name]
        if v["status"] != "ok":
            assert v["status"] in ("error", "unavailable", "skipped") and isinstance(v["error"], str) and v["error"]
            assert name == "baseline" or out["ratios"][name] is None
            continue
        assert v["tokens_per_second"] > 0 and v["audio_seconds_per_second"] > 0 and v["step_seconds"] > 0
        assert v["flops_per_step"] > 0 and v["analytic_6nt_flops_per_step"] > 0
        assert v["mfu"] is None and v["peak_memory_bytes"] is None and v["process_max_rss_bytes"] > 0
        assert v["tokens_per_second"] == pytest.approx(batch["tokens_per_step"] / v["step_seconds"], rel=0.01)
        if name != "baseline":
            assert out["ratios"][name]["speedup"] > 0 and out["ratios"][name]["tokens_per_second"] > 0
    base, variants = out["variants"]["baseline"], out["variants"]
    assert base["status"] == "ok" and base["counted_vs_analytic"] == pytest.approx(1.0, abs=0.1)
    assert variants["flash_attention_2"]["status"] == "unavailable"
    # Each toggle really reached the trainer, and LoRA's frozen base costs no weight gradients.
    assert variants["lora"]["trainable_parameters"] < base["trainable_parameters"] == base["parameters"]
    assert variants["lora"]["flops_per_step"] < base["flops_per_step"]
    assert variants["weight_dtype"]["weight_dtype"] == "bfloat16" and base["weight_dtype"] == "float32"
    assert base["applied"]["fused"] != variants["optimizer"]["applied"]["fused"]
    assert variants["gradient_checkpointing"]["applied"]["gradient_checkpointing"]
    assert variants["eager"]["applied"]["attn_implementation"] == "eager"


def test_gpu_benchmark_skips_what_the_time_budget_leaves_no_room_for(tmp_path) -> None:
    out = _run("bench_gpu.py", "--preset", "tiny", "--variants", "baseline,lora,eager", "--budget_seconds", "0.5",
               tmp_path=tmp_path)
    assert out["variants"]["baseline"]["status"] in ("ok", "error")  # cut off (an error string) if over budget
    assert [out["variants"][v]["status"] for v in ("lora", "eager")] == ["skipped", "skipped"]
    assert out["complete"]
