"""Checkpoint completeness, discovery for resumption, rotation and atomic final outputs.

A checkpoint directory counts only once its marker file exists. The marker is written last, after
every rank has finished writing (optimizer, scheduler, RNG states, trainer state, adapter), through a
temporary file and an atomic rename; a process killed at any point before that leaves a directory
without a marker, which resumption ignores and removes. Old checkpoints are rotated only after a new
one is complete, so a failing save never costs an earlier complete checkpoint.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "checkpoint_complete.json"
ADAPTER_DIR = "lora_adapters"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def dir_size(path: Path) -> int:
    """Bytes of all files below `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_marker(ckpt: Path, step: int) -> None:
    """Mark `ckpt` complete: a JSON file written to a temporary name, flushed, then renamed into place."""
    payload = {"step": step, "time": time.time(), "bytes": dir_size(ckpt)}
    fd, tmp = tempfile.mkstemp(dir=ckpt, prefix=".marker-")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, ckpt / MARKER)
    _fsync_dir(ckpt)


def step_of(ckpt: Path) -> int:
    """The optimizer step a complete checkpoint was taken at (from its marker)."""
    return int(json.loads((ckpt / MARKER).read_text())["step"])


def is_complete(ckpt: Path) -> bool:
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
    complete = [p for _, p in list_checkpoints(output_dir) if is_complete(p)]
    incomplete = [p for _, p in list_checkpoints(output_dir) if not is_complete(p)]
    return (complete[-1] if complete else None), incomplete


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def out_of_space(
    err: BaseException,
    path: Path,
    needed: int,
    *,
    what: str = "a checkpoint",
    kept: str = "the partial checkpoint is removed and earlier checkpoints are intact",
) -> str | None:
    """The message for a save of `path` that failed for lack of space, or None if `err` is something else.

    `what` names the thing saved and `kept` says what survived, for the checkpoint saves and the final
    adapter or model alike.

    `torch.save` reports a full disk as a `RuntimeError` ("file write failed") and safetensors as its own
    error type, so besides an ENOSPC or EDQUOT anywhere in the exception chain, any failure while the
    filesystem has less free space than the checkpoint needs (`needed` bytes) counts.
    """
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    no_space = any(
        (isinstance(c, OSError) and c.errno in _NO_SPACE) or "No space left" in str(c) or "StorageFull" in str(c)
        for c in chain
    )
    free = free_bytes(path)
    if not no_space and free >= needed:
        return None
    return (
        f"out of disk space while saving {path}: {what} needs about {human_bytes(needed)}, {human_bytes(free)} is free "
        f"there; {kept}. Free space or use a larger volume, then restart to resume"
    )


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
    """Delete the oldest complete checkpoints beyond `keep` (0 keeps all); never the newest or `protect`."""
    if keep <= 0:
        return []
    complete = [p for _, p in list_checkpoints(output_dir) if is_complete(p)]
    removable = [p for p in complete[:-1] if protect is None or p.resolve() != protect.resolve()]
    excess = len(complete) - keep
    removed = []
    for p in removable[: max(0, excess)]:
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `final` in one rename.

    A crash inside the block leaves `final` as it was (a previous run's output stays whole).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
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
