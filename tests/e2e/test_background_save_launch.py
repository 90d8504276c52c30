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
from trainer import exitcodes
from trainer.checkpoint import MARKER

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
        while Path(f"/proc/{ranks[1]}").exists() and _state(ranks[1]) != "Z":
            assert time.monotonic() - signalled < 120, log.read_text()[-3000:]
            time.sleep(0.02)
        complete_when_rank_1_left = [p.parent.name for p in out.glob(f"checkpoint-*/{MARKER}")]
        left_after = time.monotonic() - signalled
        code = run.proc.wait(timeout=120)

    text = log.read_text()
    assert code == exitcodes.PREEMPTED, text[-3000:]
    assert len(complete_when_rank_1_left) == 1, (
        f"rank 1 left {left_after:.1f} s after the signal, and {complete_when_rank_1_left} were complete then")
    # Rank 0's write was held: had it not been, the check above would prove nothing.
    assert left_after >= HELD_SECONDS - 0.5, f"rank 1 left {left_after:.1f} s after the signal: nothing was held"
    # The restart resumes from it.
    again = launch(launch_env(base_args, tmp_path, nproc_per_node="2", max_steps="4", save_steps="100000"),
                   timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {out / complete_when_rank_1_left[0]}" in again.stderr


def _state(pid: int) -> str:
    """The process's state letter from /proc (Z: exited, not yet reaped); empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
