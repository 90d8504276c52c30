"""Saves that fail: out of disk on a real size-limited filesystem (a tmpfs the test mounts), and a process
killed in the middle of writing a checkpoint (held there by a lease on a file the save reads); and what the
next run makes of what they left."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import clean_env
from tests.processes import launch, launch_env, trainer_process
from tests.tooling import missing
from trainer import errors
from trainer.train.checkpoint import MARKER, human_bytes, newest_complete, out_of_space

pytestmark = pytest.mark.slow


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted for this test (64 MB until the test shrinks it), unmounted afterwards."""
    mnt = tmp_path / "vol"
    mnt.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        missing(f"a size-limited tmpfs ({mount.stderr.strip()})",
                "run the tests as root, or in a container with CAP_SYS_ADMIN (mount -t tmpfs)")
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

    assert second.returncode == errors.DISK_FULL == 5, second.stderr[-3000:]
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


def test_a_full_disk_in_the_background_write_of_a_two_rank_launch_ends_it_with_5(base_args, small_fs, tmp_path) -> None:
    # LoRA saves write the optimizer state on a thread of rank 0 (--async_save): the full disk is found there,
    # after the adapter, while rank 1 has gone on to the next step. The launch must still end with 5.
    out = small_fs / "out"
    same = {"output_dir": str(out), "save_steps": "5", "logging_steps": "1", "nproc_per_node": "2"}
    first = launch(launch_env(base_args, tmp_path, **same, max_steps="5"), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.rmtree(out / "lora_adapters")
    kept = _digests(out / "checkpoint-5")
    size = json.loads((out / "checkpoint-5" / MARKER).read_text())["bytes"]
    adapter = sum(p.stat().st_size for p in (out / "checkpoint-5" / "lora_adapters").iterdir())
    _resize(small_fs, shutil.disk_usage(small_fs).used + (adapter + size) // 2)  # the adapter fits, the rest not

    second = launch(launch_env(base_args, tmp_path, **same, max_steps="20"), timeout=600)

    assert second.returncode == errors.DISK_FULL == 5, second.stderr[-3000:]
    assert f"out of disk space while saving {out / 'checkpoint-10'}" in second.stderr
    assert (tmp_path / "termination-log").read_text().startswith("rank 0: out of disk space while saving")
    # besides the launcher's attempt ledger (the retry budget) and its lock file (one launcher per output
    # directory), only the complete checkpoint is there
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-5", "launch-attempts.jsonl", "launch.lock"]
    assert _digests(out / "checkpoint-5") == kept


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

    assert second.returncode == errors.DISK_FULL == 5, second.stderr[-3000:]
    assert f"out of disk space while saving {out / 'lora_adapters'}: the final adapter needs about" in second.stderr
    assert "an earlier lora_adapters/ and every checkpoint are intact" in second.stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-5", "lora_adapters"]  # no partial copy left
    assert {name: _digests(out / name) for name in before} == before


def test_a_process_killed_while_writing_a_checkpoint_restarts_from_the_previous_one(base_args, tmp_path) -> None:
    import re

    model = tmp_path / "model"
    shutil.copytree(base_args["model_path"], model)  # its config.json gets a lease below
    out = Path(base_args["output_dir"])
    args = base_args | {"model_path": str(model), "save_steps": "10", "save_total_limit": "0", "logging_steps": "1",
                        "max_steps": "100000"}
    env = clean_env(**{k.upper(): v for k, v in args.items()}, OMP_NUM_THREADS="1")
    # The save of checkpoint-20 is held half-way, with no race: peft reads the base model's config.json while
    # it writes the adapter, after the checkpoint directory exists, and a lease taken once checkpoint-10 is
    # complete holds that open() until the kill. Nothing else opens the file between the two saves.
    partial = out / "checkpoint-20"
    with trainer_process("train", env, tmp_path / "first.log", own_group=True) as first:
        first.wait_for(lambda: (out / "checkpoint-10" / MARKER).is_file(), "checkpoint-10", timeout=300,
                       interval=0.005)
        with _lease(model / "config.json") as held:
            first.wait_for(held, "the save of checkpoint-20 to open the base model's config.json", timeout=300,
                           interval=0.005)
            first.kill()
    assert partial.is_dir()  # the save was under way
    assert not (partial / MARKER).exists()
    previous = max(int(p.parent.name.split("-")[1]) for p in out.glob(f"checkpoint-*/{MARKER}"))
    assert previous == 10

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


def _failed_write(write: Callable[[], object]) -> BaseException:
    """The exception `write` raises; the test fails if it does not."""
    try:
        write()
    except Exception as err:
        return err
    pytest.fail("the write was meant to fail for lack of space")


def test_a_failed_save_is_out_of_disk_if_the_disk_is_full_once_its_partial_files_are_gone(small_fs) -> None:
    import torch
    from safetensors.torch import save_file

    partial = small_fs / "out" / "checkpoint-5"

    def fill() -> BaseException:
        """A partial checkpoint that fills the 64 MiB volume, and what torch.save raised doing so."""
        partial.mkdir(parents=True, exist_ok=True)
        err = _failed_write(lambda: torch.save({"w": torch.zeros(20 * 2**20)}, partial / "optimizer.pt"))  # 80 MiB
        assert shutil.disk_usage(small_fs).free < 2**20
        return err

    # torch.save says only that a write failed ("unexpected pos", "iostream error"): it counts as out of disk
    # if, without its partial files, the volume has less free than the save needs. Here it has room for 32 MiB.
    assert out_of_space(fill(), partial, 32 * 2**20, remove=True) is None
    assert not partial.exists()
    message = out_of_space(fill(), partial, 100 * 2**20, remove=True)
    free = shutil.disk_usage(small_fs).free
    assert free > 60 * 2**20 and not partial.exists()
    assert message is not None and f"needs about 104.9 MB, {human_bytes(free)} is free there" in message

    # safetensors names the OS error: out of disk, whatever the free space reads once its file is gone.
    err = _failed_write(lambda: save_file({"w": torch.zeros(20 * 2**20)}, str(small_fs / "model.safetensors")))
    (small_fs / "model.safetensors").unlink(missing_ok=True)
    assert out_of_space(err, partial, 1) is not None


def test_resume_never_in_an_output_dir_with_checkpoints_exits_2_before_the_model_loads(base_args) -> None:
    out = Path(base_args["output_dir"])
    args = base_args | {"max_steps": "5", "save_steps": "5"}
    first = _train(args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "trainable parameters" in first.stderr
    kept = _digests(out)

    second = _train(args, resume="never")

    assert second.returncode == errors.CONFIG_ERROR == 2, second.stderr[-3000:]
    assert (f"OUTPUT_DIR {out} already holds complete checkpoints of an earlier run (checkpoint-5)" in
            " ".join(second.stderr.split()))
    assert "trainable parameters" not in second.stderr  # refused before the model loads
    assert _digests(out) == kept


@contextmanager
def _lease(path: Path) -> Iterator[Callable[[], bool]]:
    """Hold every other process's open() of `path` while the block runs (a write lease, see fcntl(2)); yields a
    check of whether one is held now. The kernel lets a held open() go on by itself after
    /proc/sys/fs/lease-break-time seconds (45 by default)."""
    if not hasattr(fcntl, "F_SETLEASE"):
        missing("file leases (fcntl F_SETLEASE)", "run the tests on Linux")
    previous = signal.signal(signal.SIGIO, signal.SIG_IGN)  # the kernel signals the lease holder: this process
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        yield lambda: fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_WRLCK  # a break is pending: an open() waits
    finally:
        os.close(fd)  # releases the lease
        signal.signal(signal.SIGIO, previous)


def test_a_save_killed_over_an_earlier_runs_checkpoint_does_not_count_as_complete(base_args, tmp_path) -> None:
    model = tmp_path / "model"
    shutil.copytree(base_args["model_path"], model)  # its config.json gets a lease below
    out = Path(base_args["output_dir"])
    args = base_args | {"model_path": str(model), "save_steps": "30", "save_total_limit": "0", "logging_steps": "1"}
    first = _train(args, max_steps="60")
    assert first.returncode == 0, first.stderr[-3000:]
    earlier = out / "checkpoint-60"
    assert (earlier / MARKER).is_file()

    # A second run resumed from the first one's checkpoint-30 saves step 60 where the first run's checkpoint-60
    # is, and is held in the middle of that save with no race: peft reads the base model's config.json while it
    # writes the adapter (to see whether the vocabulary was resized), after the checkpoint's first files, and a
    # lease taken once training is under way holds that open() until the kill. Nothing else opens the file
    # between the model's loading and the save.
    second_args = args | {"resume": str(out / "checkpoint-30"), "max_steps": "100000"}
    env = clean_env(**{k.upper(): v for k, v in second_args.items()}, OMP_NUM_THREADS="1")
    with trainer_process("train", env, tmp_path / "second.log", own_group=True) as second:
        second.wait_for_log("{'loss':", timeout=300, interval=0.01)  # step 31: the model is loaded
        with _lease(model / "config.json") as held:
            second.wait_for(held, "the save of checkpoint-60 to open the base model's config.json", timeout=300,
                            interval=0.005)
            second.kill()
        log = second.log_text()

    assert (earlier / "lora_adapters").is_dir()  # the save was under way
    assert not (earlier / MARKER).exists()
    assert newest_complete(out)[0] == out / "checkpoint-30"  # what a restart resumes from
    assert f"removing {earlier} before saving this step: it belongs to an earlier run (complete)" in log


def test_a_restart_tidies_what_a_process_killed_while_replacing_the_final_adapter_left(base_args) -> None:
    out = Path(base_args["output_dir"])
    args = base_args | {"max_steps": "4", "save_steps": "4"}
    first = _train(args)
    assert first.returncode == 0, first.stderr[-3000:]
    # What a process killed between atomic_dir's two renames leaves: the previous adapter moved aside, the new
    # one under its temporary name and no lora_adapters/; beside it, an earlier full fine-tuning's half-written
    # model (the Trainer names the copies with mkdtemp and the pid).
    old, tmp, model_tmp = out / ".lora_adapters.old-4242", out / ".lora_adapters.tmp-k1ll3d", out / ".model.tmp-abc123"
    os.replace(out / "lora_adapters", old)
    shutil.copytree(old, tmp)
    model_tmp.mkdir()
    (model_tmp / "model.safetensors").write_bytes(b"\0" * 4096)

    second = _train(args)

    assert second.returncode == 0, second.stderr[-3000:]
    assert f"restored {out / 'lora_adapters'} from {old}" in second.stderr
    assert f"removing {tmp}: left by a run that stopped while it replaced {out / 'lora_adapters'}" in second.stderr
    assert f"removing {model_tmp}: left by a run that stopped while it replaced {out / 'model'}" in second.stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-4", "lora_adapters"]
    assert (out / "lora_adapters" / "adapter_model.safetensors").is_file()
