"""OUTPUT_DIR's rules, without training: what `--resume never` refuses, what the start of a run does with
what a process killed while replacing the final output left, and which failed saves count as out of disk.

Real directories and real exception objects; the runs that produce them for real (a full tmpfs, a killed
process) are in test_checkpoint.py.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from trainer import exitcodes
from trainer.checkpoint import MARKER, out_of_space, recover_final_outputs, write_marker
from trainer.cli import parse_train_args
from trainer.config import ConfigError
from trainer.outcome import classify
from trainer.run import resolve_resume

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
    assert classify(refused.value)[0] == exitcodes.CONFIG_ERROR == 2
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

    with caplog.at_level(logging.WARNING, logger="trainer.checkpoint"):
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

    with caplog.at_level(logging.WARNING, logger="trainer.checkpoint"):
        recover_final_outputs(out)

    assert (out / "model" / "adapter_config.json").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["model"]
    assert f"removing {old}: left by a run that stopped while it replaced {out / 'model'}" in caplog.text


def test_the_final_output_is_flushed_before_it_replaces_the_previous_one(tmp_path, monkeypatch) -> None:
    from trainer import checkpoint

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
    from trainer import checkpoint

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

    from trainer import checkpoint

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
