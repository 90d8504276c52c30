"""Saves that fail: out of disk on a real size-limited filesystem (a tmpfs the test mounts), and a process
killed in the middle of writing a checkpoint (held there by a FIFO in the checkpoint's place)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import clean_env
from tests.processes import trainer_process
from tests.tooling import missing
from trainer import exitcodes
from trainer.checkpoint import MARKER

pytestmark = pytest.mark.slow


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted for this test (64 MB until the test shrinks it), unmounted afterwards."""
    mnt = tmp_path / "vol"
    mnt.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        missing(f"a size-limited tmpfs (mount -t tmpfs needs root or CAP_SYS_ADMIN: {mount.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _resize(mnt: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


def _digests(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _train(base_args: dict[str, str], **over: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(**{k.upper(): v for k, v in (base_args | over).items()})
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "trainer", "train"], env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_full_disk_during_a_save_exits_5_naming_the_path_and_size_and_keeps_earlier_checkpoints(
    base_args, small_fs
) -> None:
    out = small_fs / "out"
    args = base_args | {"output_dir": str(out), "save_steps": "5", "logging_steps": "1"}
    first = _train(args, max_steps="5")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "free, and a checkpoint needs about" not in first.stderr  # room enough: no warning
    shutil.rmtree(out / "lora_adapters")
    kept = _digests(out / "checkpoint-5")
    size = json.loads((out / "checkpoint-5" / MARKER).read_text())["bytes"]
    used = shutil.disk_usage(small_fs).used
    _resize(small_fs, used + size // 2)  # room for half of the next checkpoint

    second = _train(args, max_steps="20")

    assert second.returncode == exitcodes.DISK_FULL == 5, second.stderr[-3000:]
    needed = f"{size / 1e3:.1f} kB" if size < 100_000 else f"{size / 1e6:.1f} MB"
    # Warned when training began, then stopped at the save.
    warning = (rf"{re.escape(str(out))} has \S+ .B free, and a checkpoint needs about {needed}: "
               rf"the next save will fail with exit code 5")
    found = re.search(warning, second.stderr)
    assert found and found.start() < second.stderr.index("out of disk space while saving"), second.stderr[-3000:]
    assert f"out of disk space while saving {out / 'checkpoint-10'}: a checkpoint needs about {needed}" in (
        second.stderr)
    assert not (out / "checkpoint-10").exists()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-5"]
    assert _digests(out / "checkpoint-5") == kept

    # With space again, a restart resumes from checkpoint-5: lost are steps 6-10, those since it.
    _resize(small_fs, 64 * 2**20)
    third = _train(args, max_steps="10")
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"resuming from {out / 'checkpoint-5'} at step 5" in third.stderr
    step_logs = [line for line in third.stdout.splitlines() if line.startswith("{'loss':")]
    assert len(step_logs) == 5


def test_a_full_disk_at_the_final_adapter_exits_5_and_keeps_the_previous_adapter_and_checkpoints(
    base_args, small_fs
) -> None:
    out = small_fs / "out"
    args = base_args | {"output_dir": str(out), "save_steps": "5", "logging_steps": "1", "max_steps": "5"}
    first = _train(args)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {name: _digests(out / name) for name in ("checkpoint-5", "lora_adapters")}
    _resize(small_fs, shutil.disk_usage(small_fs).used)  # not a byte more

    # The restart resumes at step 5 (= max_steps): all that is left to write is the final adapter.
    second = _train(args)

    assert second.returncode == exitcodes.DISK_FULL == 5, second.stderr[-3000:]
    assert f"out of disk space while saving {out / 'lora_adapters'}: the final adapter needs about" in second.stderr
    assert "an earlier lora_adapters/ and every checkpoint are intact" in second.stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-5", "lora_adapters"]  # no partial copy left
    assert {name: _digests(out / name) for name in before} == before


def test_a_process_killed_while_writing_a_checkpoint_restarts_from_the_previous_one(base_args, tmp_path) -> None:
    import os
    import re

    out = Path(base_args["output_dir"])
    args = base_args | {"save_steps": "10", "save_total_limit": "0", "logging_steps": "1", "max_steps": "100000"}
    env = clean_env(**{k.upper(): v for k, v in args.items()}, OMP_NUM_THREADS="1")
    # The save of checkpoint-50 is held half-way, with no race: before it starts, its optimizer.pt is made
    # a FIFO that nobody reads, so the save writes the adapter and then blocks opening optimizer.pt (the
    # Trainer writes the optimizer after the model) until the kill. Its marker can never be written.
    partial = out / "checkpoint-50"
    adapter = partial / "lora_adapters" / "adapter_model.safetensors"
    with trainer_process("train", env, tmp_path / "first.log", own_group=True) as first:
        first.wait_for(lambda: (out / "checkpoint-10" / MARKER).is_file(), "checkpoint-10", timeout=300,
                       interval=0.005)
        partial.mkdir()  # fails if the run were already past step 50: the hold would come too late
        os.mkfifo(partial / "optimizer.pt")
        first.wait_for(adapter.is_file, "the held save of checkpoint-50 to write its adapter", timeout=300,
                       interval=0.01)
        first.kill()
    assert not (partial / MARKER).exists()
    previous = max(int(p.parent.name.split("-")[1]) for p in out.glob(f"checkpoint-*/{MARKER}"))
    assert previous == 40

    second = _train(args, max_steps=str(previous + 1), save_steps="1000")

    assert second.returncode == 0, second.stderr[-3000:]
    assert f"ignoring incomplete checkpoint {partial}" in second.stderr
    assert re.search(rf"resuming from \S*checkpoint-{previous} at step {previous}\b", second.stderr)
    assert not partial.exists()
    # Lost: the steps since checkpoint-{previous}; the restart goes on from there.
    step_logs = [line for line in second.stdout.splitlines() if line.startswith("{'loss':")]
    assert len(step_logs) == 1
    assert (out / f"checkpoint-{previous + 1}" / MARKER).is_file()
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()
