"""Samples while training: at the configured steps, scored, pushed to a real Pushgateway and queried from a real
Prometheus; a failing sampler does not stop training; the same under a 2-process torchrun run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainerCallback

from tests.conftest import clean_env, to_argv
from tests.monitoring.conftest import start_stack
from tests.monitoring.stack import value, wait_for
from tests.tooling import REPO, require_tool
from tests.trainer.datafiles import DEMO
from tests.trainer.quality.models import tiny_wavlm_xvector, tiny_whisper
from trainer.commands.train import main as train_main
from trainer.config.cli import parse_train_args

REF = DEMO / "audio" / "us_male" / "01.flac"


def _prompts(path: Path, ref: Path = REF) -> Path:
    path.write_text(json.dumps({"id": "cloned", "text": "Close the window.", "reference_audio": str(ref),
                               "reference_text": "Please close the window."}) + "\n"
                    + json.dumps({"id": "plain", "text": "Good morning."}) + "\n")
    return path


@pytest.fixture(scope="module")
def quality_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("q")
    return tiny_whisper(root / "whisper"), tiny_wavlm_xvector(root / "wavlm")


def _rows(out: Path, step: int) -> list[dict]:
    return [json.loads(x) for x in (out / "samples" / f"step-{step}" / "samples.jsonl").read_text().splitlines()]


def test_samples_appear_at_the_steps_scored_and_reach_prometheus_in_one_process(
    base_args, quality_models, tmp_path
) -> None:
    require_tool("prometheus")
    stack = start_stack(tmp_path / "stack")
    try:
        run = "samples-one"
        args = base_args | {
            "max_steps": "10", "save_steps": "10", "sample_steps": "4", "sample_at_checkpoints": "true",
            "sample_prompts_file": str(_prompts(tmp_path / "p.jsonl")), "sample_max_audio_seconds": "1",
            "asr_model_path": str(quality_models[0]), "speaker_model_path": str(quality_models[1]),
            "pushgateway_url": stack.gateway.url, "metrics_push_interval_seconds": "0.2", "run_name": run,
        }
        train_main(parse_train_args(to_argv(args), clean_env()))
        out = Path(args["output_dir"])
        assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-10", "step-4", "step-8"]
        for step in (4, 8, 10):
            rows = _rows(out, step)
            assert [r["id"] for r in rows] == ["cloned", "plain"]
            assert all((out / "samples" / f"step-{step}" / r["file"]).is_file() for r in rows)
            assert all(r["stopped"] in ("end_of_audio", "max_audio_seconds") and r["seconds"] <= 1 for r in rows)
            assert all("wer" in r and "cer" in r for r in rows) and "speaker_similarity" in rows[0]
        p = stack.prometheus.url
        clips = wait_for(p, f'higgs_trainer_generated_clips_total{{job="{run}"}}',
                         lambda r: bool(r) and value(r[0]) == 6)
        assert value(clips[0]) == 6
        step = wait_for(p, f'higgs_trainer_sample_step{{job="{run}"}}', lambda r: bool(r) and value(r[0]) == 10)
        assert value(step[0]) == 10
        wer = wait_for(p, f'higgs_trainer_sample_wer{{job="{run}"}}')
        assert value(wer[0]) == pytest.approx(sum(r["wer"] for r in _rows(out, 10)) / 2, abs=1e-6)
        best = wait_for(p, f'higgs_trainer_sample_best_wer{{job="{run}"}}')
        assert value(best[0]) == pytest.approx(min(sum(r["wer"] for r in _rows(out, s)) / 2 for s in (4, 8, 10)))
        sim = wait_for(p, f'higgs_trainer_sample_speaker_similarity{{job="{run}"}}')
        assert value(sim[0]) == pytest.approx(_rows(out, 10)[0]["speaker_similarity"], abs=1e-6)
        assert wait_for(p, f'higgs_trainer_sample_best_speaker_similarity{{job="{run}"}}')
        assert wait_for(p, f'higgs_trainer_sample_cer{{job="{run}"}}')
    finally:
        stack.stop()


class _DeleteReference(TrainerCallback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_step_begin(self, args, state, control, **kwargs):
        self.path.unlink(missing_ok=True)


def test_a_failing_sampler_is_counted_and_training_finishes(base_args, tmp_path, monkeypatch) -> None:
    from trainer.generate import sampler as sampler_module

    ref = tmp_path / "ref.flac"
    ref.write_bytes(REF.read_bytes())
    args = base_args | {"max_steps": "6", "save_steps": "6", "sample_steps": "2", "sample_max_audio_seconds": "0.5",
                        "sample_prompts_file": str(_prompts(tmp_path / "p.jsonl", ref))}
    made: list = []
    real = sampler_module.build_sampler

    def build_and_keep(*a, **kw):
        cb = real(*a, **kw)
        made.append(cb)
        a[1].add_callback(_DeleteReference(ref))  # the reference disappears once training runs
        return cb

    monkeypatch.setattr(sampler_module, "build_sampler", build_and_keep)
    train_main(parse_train_args(to_argv(args), clean_env()))
    out = Path(args["output_dir"])
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()
    assert made[0].failures == 3  # steps 2, 4, 6
    assert not any((out / "samples").glob("step-*/samples.jsonl"))


def test_a_bad_prompts_file_stops_the_run_before_anything_loads(base_args, tmp_path, capsys) -> None:
    from trainer.__main__ import main

    bad = tmp_path / "p.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": "x", "reference_audio": "gone.wav", "reference_text": "x"}\n')
    args = base_args | {"sample_steps": "2", "sample_prompts_file": str(bad)}
    assert main(["train", *to_argv(args)]) == 2
    assert f"{bad}:2): field 'reference_audio': reference audio file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_samples_appear_at_the_steps_in_a_two_process_torchrun_run(base_args, tmp_path) -> None:
    args = base_args | {"max_steps": "6", "save_steps": "6", "sample_steps": "3",
                        "sample_prompts_file": str(_prompts(tmp_path / "p.jsonl")), "sample_max_audio_seconds": "1",
                        "ddp_timeout": "60"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "trainer",
           "train", *to_argv(args)]
    proc = subprocess.run(cmd, cwd=REPO, env=clean_env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(args["output_dir"])
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-3", "step-6"]
    for step in (3, 6):
        assert [r["id"] for r in _rows(out, step)] == ["cloned", "plain"]
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()
