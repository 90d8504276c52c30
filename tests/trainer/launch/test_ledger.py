"""The retry budget: the launcher's attempt ledger on the output volume, read as the next attempt reads it.

The attempts before the last are written through the ledger as the launcher writes them (a real torchrun
killed at the same step three times would take minutes); the attempt that must stop is a real
`launch`, which ends before torchrun starts.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.processes import launch, launch_env, trainer_process
from trainer import errors
from trainer.launch.ledger import LEDGER_NAME, Attempt, Ledger, budget_reason, counted_failures, read
from trainer.launch.topology import TORCHRUN_MODULE
from trainer.train.checkpoint import write_marker


def checkpoint(out: Path, step: int) -> None:
    """A complete checkpoint-N (its marker is what makes it count)."""
    path = out / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"0" * 16)
    write_marker(path, step)


def attempt(out: Path, code: int, *, save_at: int | None = None) -> None:
    """One attempt as the launcher keeps it: begun from the newest complete checkpoint, ended with `code`."""
    from trainer.launch.attempt import newest_step

    ledger = Ledger(out)
    ledger.begin(newest_step(str(out))[0])
    if save_at is not None:
        checkpoint(out, save_at)
    ledger.end(code, newest_step(str(out))[0])


def a(code: int | None, start: int, end: int | None) -> Attempt:
    return Attempt(attempt=1, start_time=0.0, start_step=start, code=code, end_step=end)


def test_three_attempts_killed_at_the_same_step_end_the_fourth_with_the_permanent_code(base_args, tmp_path) -> None:
    out = Path(base_args["output_dir"])
    checkpoint(out, 10)
    for code in (errors.PROCESS_LOST, errors.SIGNAL_BASE + 9, errors.PROCESS_LOST):  # OOM-killed each time
        attempt(out, code)
    fourth = launch(launch_env(base_args, tmp_path, nproc_per_node="2", retry_budget="3"), timeout=120)
    assert fourth.returncode == errors.RETRIES_SPENT == 6, fourth.stderr[-3000:]
    message = (tmp_path / "termination-log").read_text()
    assert message.startswith("retry budget spent: the last 3 attempts (of --retry_budget 3) ended with retried "
                              "exit codes (160, 137, 160) and none saved a new checkpoint (all started from "
                              "step 10)"), message
    assert TORCHRUN_MODULE not in fourth.stderr  # torchrun never started
    attempts = read(out / LEDGER_NAME)
    assert [x.code for x in attempts] == [160, 137, 160, 6]
    assert attempts[-1].attempt == 4


@pytest.mark.slow
def test_a_run_that_checkpoints_between_kills_keeps_its_retryable_code(base_args, tmp_path) -> None:
    """Four real launches, each SIGKILLed (as the out-of-memory killer would) once it has saved a new
    checkpoint: every one ends with 160, never with the budget's 6."""
    from trainer.launch.supervise import children_of
    from trainer.train.checkpoint import MARKER

    out = Path(base_args["output_dir"])
    env = launch_env(base_args, tmp_path, max_steps="400", save_steps="2", logging_steps="1", retry_budget="2")

    def newest() -> int:
        return max((int(p.parent.name.split("-")[1]) for p in out.glob(f"checkpoint-*/{MARKER}")), default=0)

    for n in range(1, 5):
        # A kill can land after a run saved one more checkpoint than the one waited for: each launch waits for
        # a checkpoint newer than all before it (only its own run can save that one), then for its torchrun.
        before = newest()
        with trainer_process("launch", env, tmp_path / f"launch-{n}.log") as run:
            run.wait_for(lambda before=before: newest() > before, f"a checkpoint after step {before}",
                         timeout=240, interval=0.05)
            (torchrun,) = run.wait_for(lambda: children_of(run.proc.pid), "the launch's torchrun", timeout=60,
                                       interval=0.05)
            for rank in run.wait_for(lambda t=torchrun: children_of(t), "its rank", timeout=60, interval=0.05):
                os.kill(rank, signal.SIGKILL)
            code = run.proc.wait(timeout=120)
        assert code == errors.PROCESS_LOST, run.log_text()[-3000:]
    attempts = read(out / LEDGER_NAME)
    assert [x.code for x in attempts] == [160] * 4
    assert all(x.end_step > x.start_step for x in attempts)
    assert counted_failures(attempts) == 0


def test_the_count_follows_the_documented_rules() -> None:
    lost, term, kill = errors.PROCESS_LOST, errors.PREEMPTED, None
    assert counted_failures([a(lost, 5, 5)] * 3) == 3
    # SIGTERM/SIGINT stops (preemption, eviction) neither count nor break the count, even before a checkpoint.
    assert counted_failures([a(lost, 0, 0), a(term, 0, 0), a(errors.INTERRUPTED, 0, 0), a(lost, 0, 0)]) == 2
    # Progress (a newer complete checkpoint at the end) restarts the count.
    assert counted_failures([a(lost, 5, 5), a(lost, 5, 6), a(lost, 6, 6)]) == 1
    # A permanent ending closes it: a recreated job starts with a full budget.
    assert counted_failures([a(lost, 5, 5), a(lost, 5, 5), a(errors.RETRIES_SPENT, 5, 5), a(lost, 5, 5)]) == 1
    # An attempt whose end was never written (the launcher SIGKILLed) counts as killed, unless the next
    # attempt started from a newer checkpoint.
    assert counted_failures([a(kill, 5, None), a(kill, 5, None), a(lost, 5, 5)]) == 3
    assert counted_failures([a(kill, 5, None), a(lost, 7, 7)]) == 1
    assert budget_reason([a(lost, 5, 5)] * 2, 3) is None
    assert budget_reason([a(lost, 5, 5)] * 3, 3) is not None
    assert budget_reason([a(lost, 5, 5)] * 9, 0) is None  # 0: no budget


def test_an_unwritable_ledger_costs_a_warning_not_the_run(tmp_path, caplog) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    Ledger(blocked / "out").begin(0)  # its directory cannot be made
    assert "cannot write the attempt ledger" in caplog.text


GOOD = b'{"attempt": 1, "start_time": 1.0, "start_step": 0, "end_time": 2.0, "code": 137, "end_step": 0}\n'


@pytest.mark.parametrize("damage, why", [
    (GOOD + b'{"attempt": 2, "start_ti', "line 2 is torn (no line end)"),
    (GOOD + b'{"attempt": 2, "start_time": 3.0, "start_step": "ten", "end_time": null, "code": null, '
            b'"end_step": null}\n', "line 2: start_step is 'ten', expected int"),
    (GOOD + b'{"attempt": 2, "start_time": 3.0, "start_step": 0, "end_time": null, "code": "137", '
            b'"end_step": null}\n', "line 2: code is '137', expected int or null"),
    (GOOD + b'\xff\xfe{"attempt": 2}\n', "byte 96 is not UTF-8"),
    (GOOD + b'[1, 2]\n', "line 2 does not hold the fields"),
])
def test_a_damaged_ledger_is_moved_aside_with_a_warning_and_a_fresh_one_starts(tmp_path, caplog, damage,
                                                                                why) -> None:
    (tmp_path / LEDGER_NAME).write_bytes(damage)
    ledger = Ledger(tmp_path)
    assert ledger.begin(0).attempt == 1  # a fresh ledger: the budget starts full
    (aside,) = tmp_path.glob(LEDGER_NAME + ".damaged-*")
    assert aside.read_bytes() == damage  # kept for whoever wants to see what went wrong
    assert f"the attempt ledger {tmp_path / LEDGER_NAME} is damaged ({why}" in caplog.text
    assert f"moved to {aside}" in caplog.text
    assert [a.attempt for a in read(tmp_path / LEDGER_NAME)] == [1]


@pytest.mark.slow
def test_a_launch_on_a_damaged_ledger_trains_instead_of_failing_with_exit_code_1(base_args, tmp_path) -> None:
    """Before, `launch` crashed on a ledger with bytes that are not UTF-8 (exit code 1, never retried: the job
    failed until someone deleted the file)."""
    out = Path(base_args["output_dir"])
    out.mkdir(parents=True)
    (out / LEDGER_NAME).write_bytes(GOOD + b"\xff\xfe\n")
    proc = launch(launch_env(base_args, tmp_path, max_steps="2", save_steps="100"), "--nproc_per_node", "1",
                  timeout=300)
    assert proc.returncode == errors.OK, proc.stderr[-3000:]
    assert "is damaged (byte 96 is not UTF-8)" in proc.stderr
    assert [(a.attempt, a.code) for a in read(out / LEDGER_NAME)] == [(1, errors.OK)]


HOLD = """
import sys, time
from trainer.launch.output_lock import OutputLock
assert OutputLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_launcher_on_a_live_output_dir_is_refused_and_a_killed_holder_never_blocks(base_args,
                                                                                            tmp_path) -> None:
    """The first launcher is a process holding the lock as `launch` holds it; the second is a real `launch`,
    refused with exit code 2 naming the holder before torchrun starts. Once the holder is SIGKILLed (a pod's
    end), the kernel has released its lock: the next launch gets past it (here to the spent budget's 6)."""
    import subprocess
    import sys

    out = Path(base_args["output_dir"])
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        checkpoint(out, 10)
        for _ in range(2):
            attempt(out, errors.PROCESS_LOST)
        env = launch_env(base_args, tmp_path, retry_budget="2")
        second = launch(env, timeout=120)
        assert second.returncode == errors.CONFIG_ERROR, second.stderr[-3000:]
        message = (tmp_path / "termination-log").read_text()
        expected = f"configuration error: OUTPUT_DIR {out} is in use by another launcher (host "
        assert message.startswith(expected), message
        assert f"pid {holder.pid}, since " in message and str(out / "launch.lock") in message
        assert "torch.distributed.run" not in second.stderr
        assert [x.code for x in read(out / LEDGER_NAME)] == [160, 160]  # the refused one wrote nothing there
    finally:
        holder.kill()
        holder.wait()
    third = launch(env, timeout=120)
    assert third.returncode == errors.RETRIES_SPENT, third.stderr[-3000:]
