"""Checkpoint completeness, discovery for resumption, rotation and atomic final outputs.

A checkpoint directory counts only once its marker file exists (`write_marker`), and the final adapter
(or model) is swapped in whole (`atomic_dir`): what a process killed on the way leaves, the next start
ignores and removes, or puts back. Why the marker is written last: docs/design/checkpoints.md.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer import fsmode
from trainer.errors import lost_peer

log = logging.getLogger(__name__)

MARKER = "checkpoint_complete.json"
ADAPTER_DIR = "lora_adapters"
MODEL_DIR = "model"  # the final output of full fine-tuning
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries.

    Some filesystems cannot fsync a directory and say so (EINVAL, ENOTSUP, EBADF): nothing more can be done there. Any
    other error (EIO) is raised, like a file's.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def sync_files(directory: Path) -> None:
    """Flush `directory`'s files and directories to stable storage, so a marker written after vouches for them.

    Every file below `directory`, the directories themselves and `directory`'s own entry in its parent are
    synced (fsync): a marker written after this vouches for data that is on disk.

    Every output passes through here before it counts (a checkpoint before its marker, the final adapter or
    model and a merged model before their rename), so this is also where each file and directory gets the mode
    a plain `open()` or `mkdir()` gives under the umask, if its writer made it more private (safetensors writes
    0600): whoever reads the output, an inference pod sharing the volume, must be able to open it.
    """
    umask = fsmode.current_umask()
    fsmode.widen_to_umask(directory, umask)
    for p in sorted(directory.rglob("*")):
        fsmode.widen_to_umask(p, umask)
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif p.is_dir():
            _fsync_dir(p)
    _fsync_dir(directory)
    _fsync_dir(directory.parent)  # `checkpoint-N` itself, before rotation may delete older checkpoints


def dir_size(path: Path) -> int:
    """Bytes of all files below `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_marker(ckpt: Path, step: int) -> int:
    """Mark `ckpt` complete: a JSON file written to a temporary name, flushed, then renamed into place.

    The marker is written last (docs/design/checkpoints.md says why and what comes before it).

    Returns the checkpoint's bytes on disk, the marker included (what `dir_size` would now say), so that
    the caller need not walk the directory again.
    """
    payload = {"step": step, "time": time.time(), "bytes": dir_size(ckpt)}
    fd, tmp = fsmode.temp_file(ckpt, ".marker-")  # the umask's mode, as every other file of the checkpoint
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
        marker_bytes = f.tell()
    os.replace(tmp, ckpt / MARKER)
    _fsync_dir(ckpt)
    return payload["bytes"] + marker_bytes


def step_of(ckpt: Path) -> int:
    """The optimizer step a complete checkpoint was taken at (from its marker)."""
    return int(json.loads((ckpt / MARKER).read_text())["step"])


def is_complete(ckpt: Path) -> bool:
    """Whether a checkpoint directory holds its marker, written last: only then does it count."""
    return (ckpt / MARKER).is_file()


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """All `checkpoint-N` directories, oldest step first."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def newest_complete(output_dir: str | Path) -> tuple[Path | None, list[Path]]:
    """(newest complete checkpoint or None, incomplete checkpoint directories)."""
    complete: list[Path] = []
    incomplete: list[Path] = []
    for _, p in list_checkpoints(output_dir):
        (complete if is_complete(p) else incomplete).append(p)
    return (complete[-1] if complete else None), incomplete


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete `checkpoint-N` directories, oldest step first."""
    return [p for _, p in list_checkpoints(output_dir) if is_complete(p)]


def clear_for_save(ckpt: Path) -> None:
    """Remove a `checkpoint-N` directory an earlier run left where this run is about to save step N.

    Writing over it would keep its marker while the files change one by one, so a save killed half-way
    would leave a directory that counts as complete and mixes two runs. The marker goes first, so that
    even a removal that fails part-way cannot leave one behind.
    """
    if not ckpt.exists():
        return
    log.warning("removing %s before saving this step: it belongs to an earlier run (%s)", ckpt,
                "complete" if is_complete(ckpt) else "incomplete")
    (ckpt / MARKER).unlink(missing_ok=True)
    shutil.rmtree(ckpt)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# safetensors reports a failed write as its own error type, with the OS error's text in its message.
_NO_SPACE_TEXTS = ("No space left on device", "Disk quota exceeded", "StorageFull", "QuotaExceeded")
# torch.save writes through a C++ stream and says only that a write failed, never why (seen on a full
# tmpfs: "[enforce fail at inline_container.cc:672] . unexpected pos 20096 vs 19988", caused by
# "basic_ios::clear: iostream error"; through a Python file object: "... file write failed").
_WRITE_FAILED_TEXTS = ("unexpected pos", "iostream error", "file write failed")


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and the exceptions it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


def no_space(err: BaseException) -> bool | None:
    """Whether a failed save ran out of disk space.

    True when the error says so (ENOSPC or EDQUOT, as an `OSError` or in safetensors' message), None when it is
    torch.save's write failure, which does not say why (the free space decides), False for anything else.

    A lost peer is never a full disk, whatever else the chain holds: a restart can succeed, and exit code 5
    is not retried. Nor is any other `OSError` (a permission error, a read-only filesystem).
    """
    chain = _chain(err)
    if any(lost_peer(c) for c in chain):
        return False
    if any(isinstance(c, OSError) and c.errno in _NO_SPACE for c in chain):
        return True
    if any(any(t in str(c) for t in _NO_SPACE_TEXTS) for c in chain):
        return True
    if any(isinstance(c, RuntimeError) and any(t in str(c) for t in _WRITE_FAILED_TEXTS) for c in chain):
        return None
    return False


def out_of_space(
    err: BaseException,
    path: Path,
    needed: int,
    *,
    what: str = "a checkpoint",
    kept: str = "the partial checkpoint is removed and earlier checkpoints are intact",
    remove: bool = False,
) -> str | None:
    """The message for a save of `path` that failed for lack of space, or None if `err` is something else.

    `what` names the thing saved and `kept` says what survived, for the checkpoint saves and the final
    adapter or model alike. With `remove`, the partial `path` is deleted first (the writing rank does
    that; the final output's temporary copy is already gone): the free space is measured after that, so
    that it is what the save had to work with, not the nothing its own partial files left. A failure
    that does not say why it failed (`no_space` is None) counts as out of space only when that free space
    is below `needed`, the bytes a save of this kind takes.
    """
    full = no_space(err)
    if full is False:
        return None
    _close_failed_writers(err)
    if remove:
        shutil.rmtree(path, ignore_errors=True)
    free = free_bytes(path)
    if full is None and free >= needed:
        return None
    return (
        f"out of disk space while saving {path}: {what} needs about {human_bytes(needed)}, {human_bytes(free)} is free "
        f"there; {kept}. Free space or use a larger volume, then restart to resume"
    )


def _close_failed_writers(err: BaseException) -> None:
    """Let go of the files the failed save still holds open, so that removing them frees their space.

    torch.save's writer is not closed when a write fails: the frames of the traceback keep it, and with it
    the file, whose blocks stay allocated, unlinked or not, for as long as `err` lives. Clearing those
    frames' locals (the traceback still says where each was) drops the last reference and closes it.
    """
    for e in _chain(err):
        traceback.clear_frames(e.__traceback__)


def free_bytes(path: Path) -> int:
    """Free space of the filesystem `path` is (or will be) on: that of its nearest existing ancestor."""
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free


def human_bytes(n: int) -> str:
    """`n` bytes as the messages print them: MB from 0.1 MB up, else kB."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def last_size(output_dir: str | Path) -> int | None:
    """Bytes of the newest complete checkpoint (from its marker), or None without one."""
    newest, _ = newest_complete(output_dir)
    if newest is None:
        return None
    try:
        return int(json.loads((newest / MARKER).read_text())["bytes"])
    except (OSError, ValueError, KeyError):
        return None


def remove_incomplete(paths: list[Path]) -> None:
    """Delete checkpoint directories that never got their marker (a crash mid-save)."""
    for p in paths:
        log.warning("ignoring incomplete checkpoint %s (no %s): removing it", p, MARKER)
        shutil.rmtree(p, ignore_errors=True)


def rotate(output_dir: str | Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond `keep` (0 keeps all); never the newest or `protect`.

    Old checkpoints are rotated only after a new one is complete, so a failing save never costs an earlier
    complete checkpoint.
    """
    if keep <= 0:
        return []
    complete = complete_checkpoints(output_dir)
    removable = [p for p in complete[:-1] if protect is None or p.resolve() != protect.resolve()]
    excess = len(complete) - keep
    removed = []
    for p in removable[: max(0, excess)]:
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory `.NAME.tmp-*`; on success it replaces `final`.

    The final adapter (or model) is written there, so that a process killed on the way never leaves a
    half-written one in its place.

    The directory gets the mode a plain `mkdir` would (`fsmode.temp_dir`): it becomes the output, and
    whoever reads the output (an inference pod sharing the volume) must be able to open it.

    The swap is two renames: `final` to `.NAME.old-PID`, then the new copy to `final`. A crash inside the
    block leaves `final` as it was and the temporary copy; a crash between the renames leaves no `final`
    but the previous one, whole, as `.NAME.old-PID`. `recover_final_outputs` tidies both up.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = fsmode.temp_dir(final.parent, f".{final.name}.tmp-")  # renamed into place: its mode is the output's
    try:
        yield tmp
        sync_files(tmp)  # on stable storage before it replaces the previous output
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_final_outputs(output_dir: str | Path, names: Iterable[str] = (ADAPTER_DIR, MODEL_DIR)) -> None:
    """Undo what a process killed in `atomic_dir` left in `output_dir` (rank 0, at startup).

    A `.NAME.tmp-*` copy may be half-written and a `.NAME.old-*` one is a superseded output: both are
    removed (with full fine-tuning each is a whole model), except that when `NAME` itself is missing, an
    `.NAME.old-*` is the previous output, whole, and is renamed back. The run then writes its own final
    output again, as it would have anyway.
    """
    out = Path(output_dir)
    for name in names:
        final = out / name
        olds = sorted(p for p in out.glob(f".{name}.old-*") if p.is_dir())
        if olds and not final.exists():
            restored = olds.pop()
            os.replace(restored, final)
            log.warning("restored %s from %s: a run stopped between the two renames that replace it", final, restored)
        for leftover in sorted(p for p in out.glob(f".{name}.tmp-*") if p.is_dir()) + olds:
            log.warning("removing %s: left by a run that stopped while it replaced %s", leftover, final)
            shutil.rmtree(leftover, ignore_errors=True)
