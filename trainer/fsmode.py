"""Output files and directories: the modes a plain `open()` or `mkdir()` gives, and a check up front.

Temporary files and private writers (safetensors) would otherwise leave outputs their owner alone can read,
which an inference pod sharing the volume could not open (`temp_file`, `widen_to_umask`). `ensure_writable_dir`
turns an OUTPUT_DIR or CACHE_DIR that cannot be created or written into a configuration error (exit code 2)
at the start of a run, before any model loads, instead of a traceback at the first save.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from trainer.errors import ConfigError

FILE_MODE = 0o666  # what open() asks for: the umask takes its bits away
DIR_MODE = 0o777  # what mkdir() asks for
_ATTEMPTS = 100  # random names tried before giving up, as tempfile does
_WRITE_CHECK_PREFIX = ".write-check-"

# Errors that say the path itself is wrong for an output directory: a configuration error, not a fault a
# restart could get past (an I/O error or a full disk is re-raised as it is).
_PATH_ERRORS = (errno.ENOTDIR, errno.EEXIST, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ELOOP)


def _proc_umask() -> int | None:
    """The process umask from /proc/self/status (Linux 4.7 and later), or None where it is not shown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_by_setting() -> int:
    """The umask read the only way `os` offers: set it and put it back.

    While it is set, a file another thread creates gets the strictest mode (077), never a wider one; done once, at
    import, before the writers start.
    """
    previous = os.umask(0o077)
    os.umask(previous)
    return previous


_UMASK_AT_IMPORT = None if _proc_umask() is not None else _umask_by_setting()


def current_umask() -> int:
    """The process umask now (read without changing it), or where /proc does not show it, as it was at import.

    `widen_to_umask` needs the umask, which `os.umask` can only read by setting it, for the whole process and
    racing with the threads that write checkpoints: it is read from /proc/self/status instead, and
    set-and-restored once at import only where that is missing.
    """
    found = _proc_umask()
    if found is not None:
        return found
    assert _UMASK_AT_IMPORT is not None
    return _UMASK_AT_IMPORT


def widen_to_umask(path: str | Path, umask: int | None = None) -> None:
    """Give `path` the mode `open()` or `mkdir()` would have, if a writer made it more private than that.

    Safetensors' 0600, for example; `open()` is the reference for a file, `mkdir()` for a directory.

    Some writers do what `tempfile.mkstemp` does (see `temp_file`) inside: safetensors 0.8 writes every
    `.safetensors` file through a 0600 temporary file (safetensors issue #782), so even a plain
    `save_pretrained` leaves the weights readable by their owner alone. This gives such a file, once written,
    the mode `open()` would have; `checkpoint.sync_files` calls it on every file of an output before the
    output counts (marker or rename).

    Only adds permission bits the umask allows: a mode that already has them all (a default ACL's, or one set on
    purpose) is left alone, and nothing is ever narrowed.

    Args:
        path (`str` or `Path`):
            The file or directory, once written.
        umask (`int`, *optional*):
            The umask, passed in to save reading it again for each file of a walk.
    """
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return
    wanted = (DIR_MODE if stat.S_ISDIR(mode) else FILE_MODE) & ~(current_umask() if umask is None else umask)
    bits = stat.S_IMODE(mode)
    if bits & wanted != wanted:
        os.chmod(path, bits | wanted)


def _candidate(directory: str | Path, prefix: str, suffix: str) -> Path:
    return Path(directory) / f"{prefix}{secrets.token_hex(4)}{suffix}"


def temp_file(directory: str | Path, prefix: str, suffix: str = "") -> tuple[int, Path]:
    """`tempfile.mkstemp` with the mode `open()` gives a new file: (open descriptor for writing, path).

    Outputs are written under temporary names and renamed into place (checkpoint markers, code-cache entries, the
    final adapter or model). `tempfile.mkstemp` and `mkdtemp` create those names 0600 and 0700 whatever the umask,
    and the rename keeps that mode: a final `lora_adapters/` that a plain `save_pretrained` would have made 0755
    (or 0775 under umask 002) came out 0700, and an inference pod that shares the volume through `fsGroup` could
    not read it. `temp_file` and `temp_dir` create the temporary names with the modes `open()` and `mkdir()` ask
    for (0666 and 0777), so the kernel applies the umask (or a default ACL) exactly as it does for every other
    file.

    The name is new (O_EXCL), so several processes may write into one directory at once.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(_ATTEMPTS):
        path = _candidate(directory, prefix, suffix)
        try:
            return os.open(path, flags, FILE_MODE), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no unused temporary file name in {directory} after {_ATTEMPTS} tries")


def temp_dir(directory: str | Path, prefix: str) -> Path:
    """`tempfile.mkdtemp` with the mode `mkdir()` gives a new directory, which a rename may make an output."""
    for _ in range(_ATTEMPTS):
        path = _candidate(directory, prefix, "")
        try:
            os.mkdir(path, DIR_MODE)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no unused temporary directory name in {directory} after {_ATTEMPTS} tries")


def _not_a_directory(path: Path) -> Path | None:
    """The first of `path` and its ancestors, root first, that exists and is not a directory."""
    for p in (*reversed(path.parents), path):
        if p.exists() and not p.is_dir():
            return p
    return None


def _nearest_existing(path: Path) -> Path:
    return next((p for p in (path, *path.parents) if p.exists()), Path("/"))


def _reason(path: Path, err: OSError) -> str:
    """Why `path` cannot hold outputs, and what to do about it, as the end of a sentence."""
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = _not_a_directory(path)
        if blocker is not None:
            kind = "a regular file" if blocker.is_file() else "not a regular file either"
            return f"{blocker} is {kind}, not a directory; remove it or choose another path"
    if err.errno == errno.EROFS:
        return (f"{_nearest_existing(path)} is on a read-only file system (a read-only volume?); mount it "
                "read-write or choose another path")
    if err.errno in (errno.EACCES, errno.EPERM):
        return (f"permission denied (read-only volume?): uid {os.getuid()} may not write in {_nearest_existing(path)}; "
                "make it writable for that user or choose another path")
    return f"{err.strerror or err}; choose another path"


def ensure_writable_dir(path: str | Path, label: str) -> Path:
    """Create the output directory `path` (and its parents) if missing and check that files can be written there.

    Called by every process at the start of `train` and `prepare`, before anything loads, so that a path under a
    regular file or on a read-only volume stops the run at once with a configuration error (exit code 2) that
    names the option (`label`, e.g. "--output_dir / OUTPUT_DIR"), the path and the reason, rather than with a
    traceback at the first checkpoint. Writability is tested by creating and removing a file: permission bits
    alone cannot tell (root ignores them, a read-only mount or an immutable directory does not show in them).
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = temp_file(p, _WRITE_CHECK_PREFIX)
        os.close(fd)
        probe.unlink()
    except OSError as err:
        if err.errno not in _PATH_ERRORS:
            raise
        action = "cannot write to" if p.is_dir() else "cannot create"
        raise ConfigError(f"{label}: {action} {p}: {_reason(p, err)}") from err
    return p
