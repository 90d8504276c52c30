"""The benchmarks run and print the figures their docstrings promise (at toy sizes: speed is not
asserted here; the numbers come from full-size runs, see docs/performance.md), and each one fails when the
feature it measures is broken: `_run_planted` breaks it in the benchmark's own process (`PLANTS`) and the
benchmark must exit 1."""

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
    return json.loads(proc.stdout)  # the result alone: what else the run prints goes to stderr


# Faults planted into the project's own code before a benchmark runs, each breaking what that benchmark measures.
PLANTS = {
    # Our Trainer's optimizer never steps (the hand loop's is a plain torch optimizer, not accelerate's wrapper).
    "skip_optimizer_step": "import accelerate.optimizer as m; "
                           "m.AcceleratedOptimizer.step = lambda self, closure=None: None",
    # The trainer's sampler hook falls back to transformers' random sampler: no length grouping.
    "no_length_grouping": "from trainer.train.trainer import HiggsAudioTrainer as T; from transformers import Trainer; "
                          "T._get_train_sampler = Trainer._get_train_sampler",
    # The metrics pusher's thread burns CPU until it is stopped, then pushes as usual.
    "spinning_pusher": "from trainer.metrics import delivery as d; run = d.Pusher._run; "
                       "d.Pusher._run = lambda self: ([None for _ in iter(self._stop.is_set, True)], run(self))",
    # Token-budget packing ignores the budget: the whole epoch in one batch (then split only for the ranks).
    "budget_ignored": "from trainer.train import token_batches as t; "
                      "t.pack = lambda order, lengths, budget: [list(order)]",
    # Voice-activity detection finds no speech at all.
    "deaf_vad": "import numpy as np; from trainer.recordings import vad; "
                "vad.speech_scores = lambda samples: np.zeros(-(-len(samples) // vad.WINDOW), dtype=np.float32)",
    # The decoder layers keep transformers' per-layer boolean-mask routing: no split shared by the layers.
    "no_shared_routing": "from trainer.model import routing as r; r.install_routing = lambda model: 0",
    # The synthesizer decodes no audio from the codes it generated.
    "silent_decode": "import numpy as np; from trainer.generate.synthesizer import Synthesizer as S; "
                     "S.decode = lambda self, codes: np.zeros(0, dtype=np.float32)",
    # The fast chat-template path gives every added token the next id (its safety net then turns it off).
    "added_ids_off_by_one": "from trainer.encode.fast_prompts import FastPrompts as F; enc = F.encode; "
                            "F.encode = lambda self, prompts: [[t + 1 if t in self.ids.values() else t for t in ids] "
                            "for ids in enc(self, prompts)]",
}


def _run_planted(plant: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `script` with `PLANTS[plant]` applied first, in the same process; the caller checks it failed."""
    code = (f"import runpy, sys; sys.path.insert(0, {str(REPO)!r}); {PLANTS[plant]}; "
            f"sys.argv = [{script!r}, *sys.argv[1:]]; runpy.run_path({script!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO / "bench",
                          env=clean_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_padding_benchmark_reports_both_orders_drawn_by_the_trainer(tmp_path) -> None:
    out = _run("bench_padding.py", "--samples", "800", "--epochs", "1", "--workdir", str(tmp_path), tmp_path=tmp_path)
    assert 0 < out["real_fraction_random"] < out["real_fraction_length_grouped"] <= 1
    assert out["group_by_length_default"] is True and out["sampler"] == "LengthGroupedOrder"
    assert out["target"] == {"min_real_fraction": 0.9, "met": True}


@pytest.mark.slow
def test_padding_benchmark_fails_when_the_trainer_stops_grouping_by_length(tmp_path) -> None:
    proc = _run_planted("no_length_grouping", "bench_padding.py", "--samples", "800", "--epochs", "1",
                        "--workdir", str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "target missed" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["sampler"] == "RandomSampler" and out["real_fraction_length_grouped"] < 0.8
    assert out["target"]["met"] is False


@pytest.mark.slow
def test_trainer_overhead_benchmark_reports_a_ratio_against_our_step_under_ddp(tmp_path) -> None:
    out = _run("bench_trainer_overhead.py", *TOY, "--rounds", "2", "--ddp_baseline", "--min_ratio", "0",
               "--workdir", str(tmp_path), tmp_path=tmp_path)
    assert out["throughput_ratio"] > 0 and out["ours_step_seconds"] > 0 and out["baseline_step_seconds"] > 0
    assert len(out["per_round_ratio"]) == 2 and out["pairs"] > 0
    assert out["first_step_loss"]["ours"] == pytest.approx(out["first_step_loss"]["baseline"], rel=1e-3)
    agree = out["losses_agree"]  # every step, both rounds, before any time was compared
    assert agree["steps_per_round"] == [6, 6] and agree["max_relative_loss_gap"] <= agree["rtol"] == 1e-4
    assert agree["max_relative_lr_gap"] <= 1e-4 and agree["loss_change_over_round"] != 0
    assert out["ddp_baseline_step_seconds"] > 0 and out["throughput_ratio_vs_ddp_baseline"] > 0
    ddp = out["ddp"]  # read from the trainer's wrapped model, not restated by the bench
    assert ddp["wrapped"] is True and ddp["world_size"] == 1 and ddp["backend"] == "gloo"
    assert ddp["find_unused_parameters"] is False and ddp["bucket_cap_mb"] > 0 and ddp["static_graph"] is False
    assert ddp["gradient_as_bucket_view"] is True  # HiggsAudioTrainer.create_accelerator_and_postprocess


@pytest.mark.slow
def test_trainer_overhead_benchmark_fails_when_our_optimizer_step_is_skipped(tmp_path) -> None:
    proc = _run_planted("skip_optimizer_step", "bench_trainer_overhead.py", *TOY, "--rounds", "1",
                        "--min_ratio", "0", "--workdir", str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "the two sides trained differently" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["losses_agree"]["agree"] is False and out["losses_agree"]["max_relative_loss_gap"] > 1e-4
    assert "throughput_ratio" not in out  # no time comparison of different training


@pytest.mark.slow
def test_checkpoint_benchmark_reports_lora_smaller_than_full_and_its_cost_over_the_adapter(tmp_path) -> None:
    out = _run("bench_checkpoint.py", *TOY, "--saves", "2", "--train_steps", "5", "--every", "2", "--rounds", "1",
               "--workdir", str(tmp_path), tmp_path=tmp_path)
    lora, lora_sync = out["lora"], out["lora_sync"]
    assert lora["bytes"] < out["full"]["bytes"] and lora["adapter_bytes"] > 0
    assert lora["bytes"] == pytest.approx(lora_sync["bytes"], rel=0.01)  # the same files, written either way
    assert lora["adapter_only_seconds"] > 0 and len(lora["adapter_only_seconds_each"]) == 2
    assert 0 < lora["blocking_seconds"] <= lora["complete_seconds"]
    assert out["lora_blocking_vs_adapter_only"] > 0 and len(out["lora_blocking_vs_adapter_only_each"]) == 2
    assert out["sync_saves_complete_on_return"] is True  # synchronous saves return after their marker
    assert out["full"]["bytes"] == pytest.approx(out["full_sync"]["bytes"], rel=0.01)
    assert 0 < out["full"]["blocking_seconds"] <= out["full"]["complete_seconds"]
    low, high = out["full"]["blocking_seconds_range"]  # the spread over the saves, beside the median
    assert 0 < low <= out["full"]["blocking_seconds"] <= high
    assert out["full_async_vs_sync_blocking"] > 0
    runs = out["training_with_saves"]["seconds_per_step"]
    assert set(runs) == {"async", "sync", "none"} and all(len(v) == 1 and v[0] > 0 for v in runs.values())


@pytest.mark.slow
def test_data_path_benchmark_reports_medians_of_alternating_repeats(tmp_path) -> None:
    out = _run("bench_data_path.py", *TOY, "--encode_samples", "1", "--repeats", "2", "--cached_passes", "2",
               "--workdir", str(tmp_path), tmp_path=tmp_path)
    assert out["speedup_per_epoch"] > 1 and len(out["speedup_per_repeat"]) == 2
    assert out["encoded_samples_per_repeat"] == 1 and out["epoch_extrapolation_factor"] > 1
    assert out["dataloader_num_workers"] == 0 and out["loader_share_of_step"] > 0


@pytest.mark.slow
def test_scaling_benchmark_reports_the_ddp_settings_the_runs_used(tmp_path) -> None:
    out = _run("bench_scaling.py", *TOY[:-1], "10", "--repeats", "1", "--threads", "2", "--workdir", str(tmp_path),
               tmp_path=tmp_path)
    assert out["ratio_2_vs_1"] > 0 and out["backend"] == "gloo"
    for ddp, world in ((out["ddp"], 2), (out["ddp_1_process"], 1)):
        assert ddp["wrapped"] is True and ddp["world_size"] == world
        assert ddp["find_unused_parameters"] is False and ddp["bucket_cap_mb"] > 0
        assert ddp["gradient_as_bucket_view"] is True


# A toy step is too short for the callback's share of it to mean anything: that target is left out here.
METRICS_TOY = ["--steps", "100", "--repeats", "1", "--width", "32", "--batch", "4", "--push_timeout", "0.2",
               "--max_callback_share", "1"]


@pytest.mark.slow
def test_metrics_benchmark_reports_each_variant_against_none(tmp_path) -> None:
    out = _run("bench_metrics.py", *METRICS_TOY, tmp_path=tmp_path)
    assert out["none"]["ratio_median_to_none"] == 1.0
    assert out["offline"]["callback_us_per_step"] > 0 and out["gateway_hanging"]["step_ms_median"] > 0
    assert out["offline"]["pusher_cpu_us_per_step"] == 0  # no gateway, no thread
    hanging = out["gateway_hanging"]  # the pusher's thread really ran, and its final push gave up in time
    assert 0 < hanging["pusher_cpu_share_of_wall"] <= 0.05 and hanging["pusher_cpu_us_per_step"] > 0
    # 3 groups (job, rank, last success) x 3 attempts x 0.2 s, 3 s of backoff, 2 x 0.2 s in flight, 1 s spare
    assert hanging["finish_bound_seconds"] == pytest.approx(6.2)
    assert 9 * 0.2 + 3 <= hanging["finish_seconds_max"] <= hanging["finish_bound_seconds"]
    assert out["target"]["met"] is True and out["target"]["missed"] == []


@pytest.mark.slow
def test_metrics_benchmark_fails_when_the_pusher_thread_spins(tmp_path) -> None:
    proc = _run_planted("spinning_pusher", "bench_metrics.py", *METRICS_TOY)
    assert proc.returncode == 1, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["target"]["met"] is False
    assert "gateway_hanging: pusher CPU share" in out["target"]["missed"]
    assert out["gateway_hanging"]["pusher_cpu_share_of_wall"] > 0.3  # a core's worth, shared with training


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


def test_data_read_benchmark_reads_every_sample_it_wrote_and_reports_a_ratio_to_the_floor(tmp_path) -> None:
    out = _run("bench_data_read.py", "--samples", "300", "--repeats", "1", "--startup_subset", "50",
               "--max_ratio", "1000", "--workdir", str(tmp_path), tmp_path=tmp_path)
    assert out["samples"] == out["samples_read"] == out["distinct_audio_files"] == 300 and out["bad_samples"] == 0
    for key in ("samples_per_second", "baseline_samples_per_second", "ratio_to_floor", "seconds",
                "baseline_seconds", "baseline_json_seconds", "baseline_header_seconds", "ours_parse_map_seconds",
                "json_bytes", "audio_bytes"):
        assert out[key] > 0, key
    assert out["cold"]["samples_per_second"] > 0 and out["cold"]["ratio_to_floor"] > 0
    assert out["startup"]["subset_samples"] == 50 and 0 < out["startup"]["share_of_data_startup"] < 1
    assert out["target"] == {"max_ratio_to_floor": 1000, "met": True}
    assert len(out["per_repeat_ratio"]) == 1
    stream = out["stream"]  # the streaming read against json.load of the same file, in the same run
    assert stream["seconds"] > 0 and stream["json_load_seconds"] > 0 and stream["peak_bytes"] > 0
    assert stream["peak_ratio"] == round(stream["peak_bytes"] / stream["json_load_peak_bytes"], 4)
    assert stream["time_ratio"] > 0


@pytest.mark.slow
def test_cpu_step_benchmark_reports_the_profile_the_matmul_fraction_and_variants_that_train_alike(tmp_path) -> None:
    out = _run("bench_cpu_step.py", *TOY, "--profile_steps", "2", "--matmul_size", "256", "--workdir", str(tmp_path),
               tmp_path=tmp_path)
    assert out["flops_per_step"] > 0 and out["matmul_gflops"] > 0 and out["step_seconds"] > 0
    assert out["fraction_of_matmul_rate"] == pytest.approx(out["step_gflops"] / out["matmul_gflops"], rel=0.05)
    assert "aten::mm" in out["profile_self_cpu_share"] and sum(out["profile_self_cpu_share"].values()) <= 1.001
    assert set(out["variants_speedup"]) == {"adamw_foreach", "adamw_for_loop", "clip_foreach", "attention_eager"}
    assert all(gap <= 1e-4 for gap in out["variants_max_relative_loss_gap"].values())
    for model in ("tiny", "mid"):
        routing = out["routing"][model]
        assert routing["routed"]["syncs_per_step"] < routing["transformers"]["syncs_per_step"]
        assert routing["routed"]["graph_breaks_per_layer"] == 0 < routing["transformers"]["graph_breaks_per_layer"]
        assert all(routing[way]["max_relative_loss_gap"] <= 1e-5 for way in ("routed", "dense"))


@pytest.mark.slow
def test_cpu_step_benchmark_fails_when_the_layers_keep_transformers_routing(tmp_path) -> None:
    proc = _run_planted("no_shared_routing", "bench_cpu_step.py", *TOY, "--profile_steps", "1", "--matmul_size", "64",
                        "--workdir", str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "tiny: routed step syncs" in proc.stderr and "mid: routed step syncs" in proc.stderr


GENERATE_TOY = ["--models", "tiny", "--prompts", "2", "--max_audio_seconds", "1", "--max_ratio", "1000"]


def test_generate_benchmark_reports_rtf_and_frame_rate_of_synthesize_at_batch_1_and_batch_n(tmp_path) -> None:
    out = _run("bench_generate.py", *GENERATE_TOY, "--workdir", str(tmp_path), tmp_path=tmp_path)
    tiny = out["models"]["tiny"]
    assert (tiny["hidden_size"], tiny["num_layers"], tiny["num_codebooks"]) == (32, 2, 2)
    assert tiny["batch_is_sequential"] is True
    for batch, clips in (("batch_1", 1), ("batch_2", 2)):
        r = tiny[batch]
        assert r["clips"] == clips == sum(r["stopped"].values()) and r["broken"] == []
        assert 0 < r["audio_seconds"] <= clips * 1.0
        assert r["frames"] == pytest.approx(r["audio_seconds"] * 25, abs=clips)  # 25 frames/s
        assert r["rtf"] == pytest.approx(r["seconds"] / r["audio_seconds"], rel=0.05)
        assert r["frames_per_second"] == pytest.approx(r["frames"] / r["seconds"], rel=0.05)
        assert 0 < r["generate_seconds"] <= r["seconds"] and r["ratio_to_generate"] >= 1
    assert sorted(p.name for p in (tmp_path / "clips-tiny").glob("*.wav")) == ["one.wav", "p1.wav", "p2.wav"]
    assert out["target"] == {"max_ratio_to_generate": 1000, "met": True, "missed": []}


def test_generate_benchmark_fails_when_the_synthesizer_decodes_no_audio(tmp_path) -> None:
    proc = _run_planted("silent_decode", "bench_generate.py", *GENERATE_TOY, "--workdir", str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "generation is broken" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["target"]["met"] is False and out["models"]["tiny"]["batch_1"]["audio_seconds"] == 0


@pytest.mark.slow
def test_build_dataset_benchmark_reports_segmentation_speed_and_every_readers_ratio(tmp_path) -> None:
    out = _run("bench_build_dataset.py", "--audio_minutes", "0.5", "--samples", "60", "--repeats", "1",
               "--min_realtime", "0", "--max_ratio", "1000", "--workdir", str(tmp_path), tmp_path=tmp_path)
    seg = out["segmentation"]
    assert seg["utterances_found"] == seg["utterances_expected"] > 0 and seg["hours_per_cpu_hour"] > 0
    assert seg["with_tiny_asr_hours_per_cpu_hour"] > 0 and seg["baseline_hours_per_cpu_hour"] > 0
    assert set(out["readers"]) == {"ljspeech", "libritts", "commonvoice", "hf_parquet"}
    assert all(r["ratio_to_jsonl"] > 0 and r["samples_per_second"] > 0 for r in out["readers"].values())


@pytest.mark.slow
def test_build_dataset_benchmark_fails_when_the_detector_hears_nothing(tmp_path) -> None:
    proc = _run_planted("deaf_vad", "bench_build_dataset.py", "--audio_minutes", "0.5", "--samples", "20",
                        "--repeats", "1", "--no_asr", "--min_realtime", "0", "--max_ratio", "1000",
                        "--workdir", str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "segmentation found 0 of" in proc.stderr
    assert json.loads(proc.stdout)["checks"]["every_utterance_found"] is False


@pytest.mark.slow
def test_data_scale_benchmark_reports_the_index_against_the_in_memory_baseline(tmp_path) -> None:
    out = _run("bench_data_scale.py", "--sizes", "300", "--prepare_workers", "1", "--workdir", str(tmp_path),
               tmp_path=tmp_path)
    (row,) = out["results"]
    assert row["samples"] == 300 and row["index"]["index_mb"] > 0 and row["index"]["parts_mb"] > 0
    again = row["index"]["prepare_after_1pct_append"]
    assert again["seconds"] > 0 and again["full_over_append"] == round(row["index"]["prepare"]["seconds"]
                                                                     / again["seconds"], 2)
    for side in ("index", "baseline"):
        for cmd in ("prepare", "train_1", "train_2"):
            assert row[side][cmd]["seconds"] > 0 and row[side][cmd]["peak_rss_gb"] > 0.1, (side, cmd)
    assert set(row["ratio"]) == {f"{c}_{w}" for c in ("prepare", "train_1", "train_2")
                                 for w in ("seconds", "peak_rss_gb")}


def test_memory_table_reproduces_the_measured_ddp_peaks_and_is_the_one_in_the_docs() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import memory_per_gpu as mem

    result = mem.table(json.loads(mem.RESULTS.read_text())["model"])
    n, gib = 5_377_281_024, 2**30
    assert result["parameters"] == n and result["lora_parameters"] == 9_175_040  # 28 x 16 x (2x6144 + 2x4096)
    rows = result["rows"]
    assert rows["full_fp32_masters"]["state_gib"] == round(16 * n / gib, 1) == 80.1  # 4 + 4 + 8 bytes a parameter
    assert rows["full_bf16_weights"]["state_gib"] == round(8 * n / gib, 1)
    for mode, measured in mem.MEASURED_GIB.items():
        assert rows[mode]["ddp_gib"] == {g: measured for g in (1, 2, 4, 8)}  # DDP replicates: no change with G
        fsdp = rows[mode]["fsdp_gib"]
        assert fsdp[1] > fsdp[2] > fsdp[4] > fsdp[8]
        # Eight GPUs: an eighth of the state, plus what FSDP gathers and the activations, which do not shrink.
        expected = rows[mode]["state_gib"] / 8 + rows[mode]["fsdp_gathered_gib"] + rows[mode]["activations_gib"]
        assert fsdp[8] == pytest.approx(expected, abs=0.15)
    assert rows["full_fp32_masters"]["fsdp_gib"][2] < 80 < rows["full_fp32_masters"]["ddp_gib"][1]
    assert mem.markdown(result) in (REPO / "docs" / "training.md").read_text()


def test_gpu_run_script_is_valid_bash() -> None:
    proc = subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_run.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_gpu_benchmark_profiles_the_steps_after_the_measured_ones_and_passes_trainer_options(tmp_path) -> None:
    out = _run("bench_gpu.py", "--preset", "tiny", "--variants", "baseline", "--steps", "2", "--warmup_steps", "1",
               "--profile_steps", "1", "--option", "max_grad_norm=0.5", tmp_path=tmp_path)
    base = out["variants"]["baseline"]
    assert base["status"] == "ok" and base["options"] == {"max_grad_norm": "0.5"}
    assert len(base["step_seconds_all"]) == 4  # warm-up, 2 measured, 1 profiled
    profile = base["profile"]
    assert profile["device_events"] is False and profile["top_kernels"]  # on CPU: the CPU operators
    assert any(k["name"] == "aten::mm" for k in profile["top_kernels"])
    assert {"sync_ms_per_step", "syncs_per_step", "idle_gaps", "busy_share"} <= set(profile)


@pytest.mark.slow
def test_fsdp_cpu_benchmark_reports_the_step_time_ratio_and_equal_losses(tmp_path) -> None:
    out = _run("bench_fsdp_cpu.py", *TOY[:-1], "4", "--repeats", "1", "--threads", "2", "--workdir", str(tmp_path),
               tmp_path=tmp_path)
    assert out["ratio_fsdp_vs_ddp"] == pytest.approx(out["step_seconds_fsdp"] / out["step_seconds_ddp"], rel=0.01)
    assert out["losses_equal_within_1e-5"] and out["losses_max_abs_difference"] <= 1e-5
    assert out["processes"] == 2 and out["backend"] == "gloo"


@pytest.mark.slow
def test_token_budget_benchmark_reports_both_sides_and_fails_when_the_budget_is_ignored(tmp_path) -> None:
    args = (*TOY, "--samples", "24", "--budget", "2048", "--workdir", str(tmp_path))
    out = _run("bench_token_budget.py", *args, tmp_path=tmp_path)
    assert out["problems"] == [] and out["largest_padded_tokens"]["budget"] <= 2048
    assert out["fixed_batch_size"] == 2048 // out["longest_sample_tokens"]
    assert out["tokens_per_second_ratio_budget_vs_fixed"] > 0
    proc = _run_planted("budget_ignored", "bench_token_budget.py", *args)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "micro-batches over 2048 padded tokens" in proc.stderr


@pytest.mark.slow
def test_render_benchmark_compares_the_two_paths_and_fails_when_they_differ(tmp_path) -> None:
    out = _run("bench_render.py", "--samples", "300", "--repeats", "1", tmp_path=tmp_path)
    assert out["samples"] == 300 and out["same_ids"] is True and out["fast_chunks"] == 1
    assert out["per_sample_ms"] > 0 and out["fast_ms"] > 0 and out["ratio"] > 0
    proc = _run_planted("added_ids_off_by_one", "bench_render.py", "--samples", "300", "--repeats", "1")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "the fast path was not taken" in proc.stderr
