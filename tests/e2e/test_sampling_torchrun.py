"""Samples while training on two ranks (real `launch`, torchrun, gloo on CPU): a run with samples every logging
step and at every checkpoint, evaluation on the same steps, trains exactly as one without samples; a rank 0 stuck
in its samples, a collective past --ddp_timeout and a SIGTERM while a rank waits in a collective each end the run
in a bounded time with the documented code. The stuck ranks are planted by `stall/sitecustomize.py`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_background_save_launch import _has_exited
from tests.processes import launch, launch_env, trainer_process
from tests.trainer.generate.test_sampler import _prompts
from tests.trainer.generate.test_sampling_isolation import training_entries
from trainer import errors

pytestmark = pytest.mark.slow
STALL = Path(__file__).parent / "stall"


def _env(base_args: dict, tmp_path: Path, **over: str) -> dict[str, str]:
    return launch_env(base_args, tmp_path, nproc_per_node="2", lora_dropout="0.05", **over)


def _stall_env(base_args: dict, tmp_path: Path, **over: str) -> dict[str, str]:
    (tmp_path / "stall").mkdir(exist_ok=True)
    return _env(base_args, tmp_path, STALL_DIR=str(tmp_path / "stall"), sample_max_audio_seconds="0.5",
                PYTHONPATH=os.pathsep.join(filter(None, [str(STALL), os.environ.get("PYTHONPATH")])), **over)


def test_samples_logs_evaluation_and_a_checkpoint_on_one_step_finish_and_change_nothing(base_args, tmp_path) -> None:
    # Steps 5 and 10 each sample, log and evaluate; step 10 also saves and samples again at the checkpoint.
    common = {"max_steps": "10", "save_steps": "10", "logging_steps": "5", "disable_eval": "false",
              "eval_steps": "5", "ddp_timeout": "60"}
    plain = launch(_env(base_args, tmp_path, output_dir=str(tmp_path / "plain"), **common), timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    sampled_dir = tmp_path / "sampled"
    sampled = launch(_env(base_args, tmp_path, output_dir=str(sampled_dir), sample_steps="5",
                          sample_at_checkpoints="true", sample_max_audio_seconds="0.5",
                          sample_prompts_file=str(_prompts(tmp_path / "p.jsonl")), **common), timeout=600)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert sorted(p.name for p in (sampled_dir / "samples").iterdir()) == ["step-10", "step-5"]
    expected = training_entries(tmp_path / "plain", 10)
    assert [e["step"] for e in expected] == [1, 5, 10]
    assert training_entries(sampled_dir, 10) == expected
    history = json.loads((sampled_dir / "checkpoint-10" / "trainer_state.json").read_text())["log_history"]
    assert [e["step"] for e in history if "eval_loss" in e] == [5, 10]
    adapter = "lora_adapters/adapter_model.safetensors"
    assert (sampled_dir / adapter).read_bytes() == (tmp_path / "plain" / adapter).read_bytes()


def _run_until_exit(env: dict[str, str], tmp_path: Path, limit: float) -> tuple[int, float, str]:
    """(exit code, seconds from the planted stall to the launcher's exit, log) of a launch that stalls."""
    log = tmp_path / "launch.log"
    marker_dir = Path(env["STALL_DIR"])
    with trainer_process("launch", env, log) as run:
        stalled = run.wait_for(lambda: next(marker_dir.glob("stalled-rank-*"), None), "a stalled rank",
                               timeout=300, interval=0.1)
        assert stalled is not None
        since = time.monotonic()
        code = run.proc.wait(timeout=limit)
        return code, time.monotonic() - since, log.read_text()


def test_a_rank_0_that_never_finishes_its_samples_ends_the_run_with_160_within_ddp_timeout(
    base_args, tmp_path
) -> None:
    timeout = 10
    env = _stall_env(base_args, tmp_path, HANG_SAMPLES_ON_RANK_0="1", max_steps="6", sample_steps="2",
                     sample_prompts_file=str(_prompts(tmp_path / "p.jsonl")), ddp_timeout=str(timeout),
                     signal_save_timeout_seconds="5")
    code, seconds, text = _run_until_exit(env, tmp_path, limit=timeout + 120)
    assert code == errors.PROCESS_LOST, text[-3000:]
    assert "waiting for rank 0's samples at step 2" in text
    # The documented bound: --ddp_timeout after rank 0's last finished clip, then the teardown.
    assert timeout <= seconds < timeout + 30, text[-3000:]


def test_a_collective_that_outlasts_ddp_timeout_ends_with_160(base_args, tmp_path) -> None:
    timeout = 10
    env = _stall_env(base_args, tmp_path, STALL_RANK="0", STALL_AFTER_STEP="2", max_steps="6",
                     ddp_timeout=str(timeout), signal_save_timeout_seconds="5")
    code, seconds, text = _run_until_exit(env, tmp_path, limit=timeout + 120)
    assert code == errors.PROCESS_LOST, text[-3000:]
    assert "lost a peer: RuntimeError:" in text and "timeout" in text.lower()
    assert seconds < timeout + 30, text[-3000:]


def test_a_sigterm_while_a_rank_waits_in_a_collective_ends_the_run_within_the_grace_period(
    base_args, tmp_path
) -> None:
    # Rank 1 stalls after step 2 inside a gloo receive, and rank 0 waits for it in the gradient all-reduce: both
    # sit in C++, where no Python signal handler runs, and would wait for --ddp_timeout (300 s) without the thread
    # that arms the watchdog.
    grace = 5
    env = _stall_env(base_args, tmp_path, STALL_RANK="1", STALL_AFTER_STEP="2", STALL_IN="recv", max_steps="6",
                     ddp_timeout="300", signal_save_timeout_seconds=str(grace))
    log = tmp_path / "launch.log"
    with trainer_process("launch", env, log) as run:
        run.wait_for(lambda: (tmp_path / "stall" / "stalled-rank-1").is_file(), "rank 1 to stall", timeout=300,
                     interval=0.1)
        time.sleep(2)  # rank 0 is in the all-reduce by now
        os.kill(run.proc.pid, signal.SIGTERM)
        signalled = time.monotonic()
        code = run.proc.wait(timeout=120)
        seconds = time.monotonic() - signalled
    text = log.read_text()
    assert code == errors.PREEMPTED, text[-3000:]
    assert seconds < grace + 15, f"{seconds:.1f} s after SIGTERM\n{text[-3000:]}"
    assert "did not finish within 5 s (--signal_save_timeout_seconds)" in text
    assert _has_exited(run.proc.pid)
