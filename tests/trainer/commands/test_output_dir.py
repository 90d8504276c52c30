"""OUTPUT_DIR's rules, without training: what `--resume never` refuses, what the start of a run does with
what a process killed while replacing the final output left, which failed saves count as out of disk, and an
OUTPUT_DIR or CACHE_DIR that cannot be created or written (exit code 2 before anything loads).

Real directories and real exception objects; the runs that produce them for real (a full tmpfs, a killed
process) are in test_checkpoint.py. The read-only volume is a real read-only bind mount, and the directory that
refuses writes even to root a real immutable one (`chattr +i`).
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import clean_env, to_argv
from tests.tooling import missing
from trainer import errors
from trainer.__main__ import main as cli_main
from trainer.commands.train import resolve_resume
from trainer.config.cli import parse_train_args
from trainer.errors import ConfigError, classify
from trainer.train.checkpoint import MARKER, out_of_space, recover_final_outputs, write_marker

NEVER_FITS = 10**18  # bytes: more than any volume has free


def _checkpoint(out: Path, step: int, *, complete: bool) -> Path:
    path = out / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "optimizer.pt").write_bytes(b"\0" * 100)
    if complete:
        write_marker(path, step)
    return path


def _output(path: Path, content: str) -> Path:
    """A final-output directory (or a copy of one) holding one file with `content`."""
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(content)
    return path


def test_resume_never_refuses_an_output_dir_that_holds_complete_checkpoints(base_args) -> None:
    out = Path(base_args["output_dir"])
    for step in (5, 10, 15, 20):
        _checkpoint(out, step, complete=True)
    _checkpoint(out, 25, complete=False)  # a save that died: nothing resumes it, it does not count
    cfg = parse_train_args([], {k.upper(): v for k, v in base_args.items()} | {"RESUME": "never"})

    with pytest.raises(ConfigError) as refused:
        resolve_resume(cfg)

    message = str(refused.value)
    assert message.startswith(f"--resume / RESUME: never starts a new run, but OUTPUT_DIR {out} already holds "
                              "complete checkpoints of an earlier run (1 more and checkpoint-10, checkpoint-15, "
                              "checkpoint-20)")
    assert message.endswith("Use --resume auto to continue from checkpoint-20, an empty OUTPUT_DIR, or delete them")
    assert classify(refused.value)[0] == errors.CONFIG_ERROR == 2
    assert all((out / f"checkpoint-{s}").is_dir() for s in (5, 10, 15, 20, 25))  # nothing touched

    for step in (5, 10, 15, 20):  # without complete ones, a new run starts beside the incomplete one
        (out / f"checkpoint-{step}" / MARKER).unlink()
    assert resolve_resume(cfg) is None


def test_a_start_puts_back_the_final_adapter_a_kill_between_its_two_renames_moved_aside(tmp_path, caplog) -> None:
    out = tmp_path / "out"
    # atomic_dir had moved the previous adapter aside and not yet renamed the new copy into place.
    old = _output(out / ".lora_adapters.old-4242", "previous")
    new = _output(out / ".lora_adapters.tmp-k1ll3d", "new, maybe half-written")
    half_model = _output(out / ".model.tmp-abc123", "a full fine-tuning's model, half-written")
    checkpoint = _checkpoint(out, 5, complete=True)

    with caplog.at_level(logging.WARNING, logger="trainer.train.checkpoint"):
        recover_final_outputs(out)

    assert (out / "lora_adapters" / "adapter_config.json").read_text() == "previous"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-5", "lora_adapters"]
    assert (checkpoint / MARKER).is_file()
    assert f"restored {out / 'lora_adapters'} from {old}" in caplog.text
    for leftover in (new, half_model):
        assert f"removing {leftover}: left by a run that stopped while it replaced" in caplog.text


def test_a_start_removes_a_previous_final_output_left_after_the_new_one_was_in_place(tmp_path, caplog) -> None:
    out = tmp_path / "out"
    _output(out / "model", "new")
    old = _output(out / ".model.old-77", "previous")  # killed while deleting it: maybe only part of it is left

    with caplog.at_level(logging.WARNING, logger="trainer.train.checkpoint"):
        recover_final_outputs(out)

    assert (out / "model" / "adapter_config.json").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["model"]
    assert f"removing {old}: left by a run that stopped while it replaced {out / 'model'}" in caplog.text


def test_the_final_output_is_flushed_before_it_replaces_the_previous_one(tmp_path, monkeypatch) -> None:
    from trainer.train import checkpoint

    out = tmp_path / "out"
    _output(out / "lora_adapters", "previous")
    seen: list[tuple[Path, str]] = []  # (directory flushed, what lora_adapters/ held then)
    real = checkpoint.sync_files

    def sync_files(directory: Path) -> None:
        seen.append((Path(directory), (out / "lora_adapters" / "adapter_config.json").read_text()))
        real(directory)

    monkeypatch.setattr(checkpoint, "sync_files", sync_files)
    with checkpoint.atomic_dir(out / "lora_adapters") as tmp:
        (tmp / "adapter_config.json").write_text("new")

    # The new copy was flushed under its temporary name, while the previous output was still in place.
    assert seen == [(tmp, "previous")]
    assert (out / "lora_adapters" / "adapter_config.json").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["lora_adapters"]


def test_a_final_output_whose_flush_fails_leaves_the_previous_one_and_no_partial_copy(tmp_path, monkeypatch) -> None:
    from trainer.train import checkpoint

    out = tmp_path / "out"
    _output(out / "lora_adapters", "previous")

    def failing_sync(directory: Path) -> None:
        raise OSError(errno.EIO, "Input/output error", str(directory))  # what a failing disk says at fsync

    monkeypatch.setattr(checkpoint, "sync_files", failing_sync)
    with pytest.raises(OSError, match="Input/output error"), checkpoint.atomic_dir(out / "lora_adapters") as tmp:
        (tmp / "adapter_config.json").write_text("new")

    assert sorted(p.name for p in out.iterdir()) == ["lora_adapters"]
    assert (out / "lora_adapters" / "adapter_config.json").read_text() == "previous"


@pytest.mark.parametrize(("code", "raised"), [(errno.EIO, True), (errno.EINVAL, False)], ids=["EIO", "EINVAL"])
def test_a_directory_flush_error_is_raised_unless_the_filesystem_cannot_flush_directories(
    tmp_path, monkeypatch, code: int, raised: bool
) -> None:
    import os

    from trainer.train import checkpoint

    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    (ckpt / "optimizer.pt").write_bytes(b"\0" * 10)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    if raised:
        with pytest.raises(OSError, match=os.strerror(code)):
            checkpoint.sync_files(ckpt)
    else:
        checkpoint.sync_files(ckpt)  # the files are flushed; the directory cannot be, and nothing more can be done


def _raised(err: BaseException) -> BaseException:
    """`err` as a save would have raised it: with its traceback and the exception it was handling."""
    try:
        raise err
    except BaseException as caught:
        return caught


def test_only_a_full_disk_counts_as_out_of_disk(tmp_path) -> None:
    path = tmp_path / "out" / "checkpoint-5"
    gloo_peer_lost = "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.0.0.2]:29500"
    others = [
        PermissionError(errno.EACCES, "Permission denied", str(path / "optimizer.pt")),
        OSError(errno.EROFS, "Read-only file system", str(path / "optimizer.pt")),
        RuntimeError(gloo_peer_lost),
    ]
    try:  # a peer lost while this rank handled a full disk: a restart can succeed, so it is retried
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        others.append(_raised(RuntimeError(gloo_peer_lost)))

    # Even with less free than a save needs, these are not "out of disk" (exit 5, never retried).
    for err in others:
        assert out_of_space(_raised(err), path, NEVER_FITS) is None, err

    # A full disk or quota is, whatever the free space reads now (another writer may have freed some).
    for code in (errno.ENOSPC, errno.EDQUOT):
        message = out_of_space(_raised(OSError(code, "full")), path, 1)
        assert message is not None and message.startswith(f"out of disk space while saving {path}: ")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_an_output_dir_under_a_regular_file_exits_2_naming_it_before_anything_loads(
    base_args, tmp_path, capsys
) -> None:
    blocker = tmp_path / "volume"
    blocker.write_text("a regular file where a directory was meant to be")
    out, cache = blocker / "run" / "out", tmp_path / "cache"
    args = base_args | {"output_dir": str(out), "cache_dir": str(cache)}

    assert cli_main(["train", *to_argv(args)]) == errors.CONFIG_ERROR == 2
    assert (f"higgs-audio-trainer: configuration error: --output_dir / OUTPUT_DIR: cannot create {out}: {blocker} is a "
            "regular file, not a directory; remove it or choose another path") in _one_line(capsys.readouterr().err)
    # Stopped before the data (the code cache is filled before the model loads) and before the model.
    assert not cache.exists() and blocker.is_file()


def test_a_cache_dir_under_a_regular_file_stops_prepare_with_2_and_leaves_output_dir_alone(
    base_args, tmp_path, capsys
) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    out = Path(base_args["output_dir"])
    args = base_args | {"cache_dir": str(blocker / "codes")}

    assert cli_main(["prepare", *to_argv(args)]) == errors.CONFIG_ERROR
    assert (f"--cache_dir / CACHE_DIR: cannot create {blocker / 'codes'}: {blocker} is a regular file, not a "
            "directory") in _one_line(capsys.readouterr().err)
    assert not out.exists()  # with a CACHE_DIR, prepare writes nothing under OUTPUT_DIR


def test_merge_into_a_path_under_a_regular_file_exits_2_before_the_model_loads(tiny_ckpt, tmp_path, capsys) -> None:
    adapter = tmp_path / "lora_adapters"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")  # never read: the refusal comes before anything loads
    blocker = tmp_path / "models"
    blocker.write_text("not a directory")
    out = blocker / "merged"

    code = cli_main(["merge", "--model_path", str(tiny_ckpt[0]), "--adapter_path", str(adapter), "--output_dir",
                     str(out)])

    assert code == errors.CONFIG_ERROR
    assert (f"--output_dir ({out}): cannot create {blocker}: {blocker} is a regular file, not a directory"
            in _one_line(capsys.readouterr().err))


@pytest.fixture
def read_only_volume(tmp_path: Path) -> Iterator[Path]:
    """A directory holding one subdirectory, bind-mounted read-only (as a read-only volume in a pod), unmounted
    afterwards."""
    source, mnt = tmp_path / "source", tmp_path / "ro"
    (source / "existing").mkdir(parents=True)
    mnt.mkdir()
    bind = subprocess.run(["mount", "--bind", str(source), str(mnt)], capture_output=True, text=True)
    if bind.returncode != 0:
        missing(f"a read-only bind mount ({bind.stderr.strip()})",
                "run the tests as root, or in a container with CAP_SYS_ADMIN (mount --bind)")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True, capture_output=True)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_an_output_dir_on_a_read_only_bind_mount_exits_2_whether_new_or_existing(
    base_args, read_only_volume, tmp_path, capsys
) -> None:
    cache = tmp_path / "cache"
    new, existing = read_only_volume / "out", read_only_volume / "existing"

    assert cli_main(["train", *to_argv(base_args | {"output_dir": str(new), "cache_dir": str(cache)})]) == 2
    assert (f"--output_dir / OUTPUT_DIR: cannot create {new}: {read_only_volume} is on a read-only file system (a "
            "read-only volume?); mount it read-write or choose another path") in _one_line(capsys.readouterr().err)

    # Permission bits say nothing here (root may write anything they allow): the check writes for real.
    assert cli_main(["train", *to_argv(base_args | {"output_dir": str(existing), "cache_dir": str(cache)})]) == 2
    assert (f"--output_dir / OUTPUT_DIR: cannot write to {existing}: {existing} is on a read-only file system"
            in _one_line(capsys.readouterr().err))
    assert not cache.exists()


def test_an_output_dir_in_an_immutable_directory_exits_2_as_permission_denied_from_a_real_process(
    base_args, tmp_path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    chattr = subprocess.run(["chattr", "+i", str(locked)], capture_output=True, text=True)
    if chattr.returncode != 0:
        missing(f"an immutable directory ({chattr.stderr.strip()})",
                "run the tests as root on a filesystem with the immutable attribute (chattr +i), such as ext4")
    out, cache = locked / "out", tmp_path / "cache"
    args = base_args | {"output_dir": str(out), "cache_dir": str(cache)}
    env = clean_env(**{k.upper(): v for k, v in args.items()})
    try:
        proc = subprocess.run([sys.executable, "-m", "trainer", "train"], env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)

    assert proc.returncode == errors.CONFIG_ERROR, proc.stderr[-3000:]
    assert (f"higgs-audio-trainer: configuration error: --output_dir / OUTPUT_DIR: cannot create {out}: permission "
            f"denied (read-only volume?): uid {os.getuid()} may not write in {locked}; make it writable for that user "
            "or choose another path") in _one_line(proc.stderr), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not cache.exists()
