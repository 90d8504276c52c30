"""A two-rank launch (`higgs-audio-trainer launch`, torchrun, gloo on CPU) stopped by SIGTERM while rank 0 still
writes the stop checkpoint in the background: the other rank must not leave first, or torchrun would stop rank 0
mid-write. Rank 0's write is held a few seconds by `hold_save/sitecustomize.py` (a delay, then the real write)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.processes import launch, launch_env, rank_pids, trainer_process
from trainer import errors
from trainer.train.checkpoint import MARKER

pytestmark = pytest.mark.slow
HOLD = Path(__file__).parent / "hold_save"
HELD_SECONDS = 4


def test_a_signal_stop_ends_no_rank_before_rank_0_has_completed_the_checkpoint(base_args, tmp_path) -> None:
    out = Path(base_args["output_dir"])
    env = launch_env(base_args, tmp_path, nproc_per_node="2", max_steps="100000", save_steps="100000",
                     logging_steps="1", HOLD_BACKGROUND_SAVE_SECONDS=str(HELD_SECONDS),
                     PYTHONPATH=os.pathsep.join(filter(None, [str(HOLD), os.environ.get("PYTHONPATH")])))
    log = tmp_path / "launch.log"
    with trainer_process("launch", env, log) as run:
        run.wait_for_log("{'loss'", count=3, timeout=240, interval=0.05)
        ranks = rank_pids(run.proc.pid)
        os.kill(ranks[1], signal.SIGTERM)
        signalled = time.monotonic()
        while not _has_exited(ranks[1]):
            assert time.monotonic() - signalled < 120, log.read_text()[-3000:]
            time.sleep(0.02)
        complete_when_rank_1_left = [p.parent.name for p in out.glob(f"checkpoint-*/{MARKER}")]
        left_after = time.monotonic() - signalled
        code = run.proc.wait(timeout=120)

    text = log.read_text()
    assert code == errors.PREEMPTED, text[-3000:]
    assert len(complete_when_rank_1_left) == 1, (
        f"rank 1 left {left_after:.1f} s after the signal, and {complete_when_rank_1_left} were complete then")
    # Rank 0's write was held: had it not been, the check above would prove nothing.
    assert left_after >= HELD_SECONDS - 0.5, f"rank 1 left {left_after:.1f} s after the signal: nothing was held"
    # The restart resumes from it.
    again = launch(launch_env(base_args, tmp_path, nproc_per_node="2", max_steps="4", save_steps="100000"),
                   timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {out / complete_when_rank_1_left[0]}" in again.stderr


def _has_exited(pid: int) -> bool:
    """Whether the process has exited: gone from /proc, or a zombie (state Z) its parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


@pytest.mark.parametrize("use_lora", ["true", "false"], ids=["lora", "full_fine_tuning"])
def test_an_injected_error_on_rank_1_leaves_only_once_rank_0_has_completed_the_checkpoint(
    base_args, tmp_path, use_lora
) -> None:
    # Rank 1 fails right after checkpoint-2 is saved, while rank 0's thread still flushes it. Leaving at once
    # would make torchrun stop rank 0 mid-write, killing it after 30 s: a full model's flush can take longer,
    # and the checkpoint would be lost, with a killed rank reported instead of this error.
    out = Path(base_args["output_dir"])
    env = launch_env(base_args, tmp_path, nproc_per_node="2", max_steps="100", save_steps="2", logging_steps="1",
                     use_lora=use_lora, HOLD_BACKGROUND_SAVE_SECONDS=str(HELD_SECONDS), FAIL_ON_RANK_1_AFTER_STEP="2",
                     PYTHONPATH=os.pathsep.join(filter(None, [str(HOLD), os.environ.get("PYTHONPATH")])))
    log = tmp_path / "launch.log"
    with trainer_process("launch", env, log) as run:
        run.wait_for_log("{'loss'", count=1, timeout=240, interval=0.05)
        ranks = rank_pids(run.proc.pid)
        while not _has_exited(ranks[1]):
            assert run.proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.02)
        complete_when_rank_1_left = (out / "checkpoint-2" / MARKER).is_file()
        code = run.proc.wait(timeout=120)

    text = log.read_text()
    assert "injected failure on rank 1 after step 2" in text
    assert complete_when_rank_1_left, text[-3000:]
    assert code == errors.FAILURE, text[-3000:]
    assert (tmp_path / "termination-log").read_text().startswith("rank 1:"), text[-3000:]
    assert f"waited {HELD_SECONDS - 1}" in text or f"waited {HELD_SECONDS}" in text, text[-3000:]
