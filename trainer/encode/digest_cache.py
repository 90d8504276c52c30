"""Audio files' content digests, remembered by path, size and modification time: a rebuild reads only new audio.

A clip's cache key is the SHA-256 of its file's bytes (`trainer.encode.code_cache`), so that a file replaced under
its name is never served stale codes. Working that out reads every byte of every audio file, on every build:
minutes to hours for a corpus of millions of clips, even when nothing changed. This table keeps each file's digest
with the size and modification time (nanoseconds) it had when read; a file whose size and time still match is not
read again. The index's own freshness check (`trainer.encode.index_build.fingerprint`) trusts the same two
values for the data file: a file rewritten with the same size within the same clock tick, its time then set
back, is not noticed by either.

The table is `digests.jsonl` in the cache directory, a line a file read: `{"path", "size", "mtime_ns",
"digest"}`. New lines are appended under an exclusive lock, a batch per write, so ranks and jobs that share the
cache may add to it at once; a later line for a path wins. A torn last line (a killed writer) is skipped. When
most lines are outdated, the table is rewritten whole under the same lock (temporary file, then rename).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer import fsmode
from trainer.encode.file_lock import file_lock

log = logging.getLogger(__name__)

TABLE = "digests.jsonl"
LOCK = "digests.lock"


def _line(path: str, known: tuple[int, int, str]) -> str:
    """The table line of one file (no line end): what `_entry` reads back."""
    size, mtime, digest = known
    return json.dumps({"path": path, "size": size, "mtime_ns": mtime, "digest": digest}, ensure_ascii=False)


def _entry(line: str) -> tuple[str, tuple[int, int, str]] | None:
    """(path, (size, mtime_ns, digest)) of one table line, or None when it is not a whole, well-formed entry."""
    try:
        e: Any = json.loads(line)
        path, size, mtime, digest = e["path"], e["size"], e["mtime_ns"], e["digest"]
    except (ValueError, KeyError, TypeError):
        return None
    ok = isinstance(path, str) and type(size) is int and type(mtime) is int and isinstance(digest, str)
    return (path, (size, mtime, digest)) if ok else None


class DigestCache:
    """The digests of audio files read before, by absolute path; `digest(path)` reads a file only when it changed."""

    def __init__(self, directory: Path, compute: Callable[[str], str]) -> None:
        self.dir, self.compute = directory, compute
        self.known: dict[str, tuple[int, int, str]] = {}
        self.new: list[str] = []  # table lines of the files read by this process, not yet written
        self.lines = 0
        table = directory / TABLE
        if table.is_file():
            with open(table, encoding="utf-8", errors="replace") as f:
                for line in f:
                    self.lines += 1
                    entry = _entry(line)
                    if entry is not None:
                        self.known[entry[0]] = entry[1]

    def digest(self, path: str) -> str:
        """The SHA-256 of the file's bytes: the remembered one while its size and modification time match."""
        absolute = os.path.abspath(path)
        st = os.stat(absolute)
        known = self.known.get(absolute)
        if known is not None and known[:2] == (st.st_size, st.st_mtime_ns):
            return known[2]
        digest = self.compute(absolute)
        self.known[absolute] = (st.st_size, st.st_mtime_ns, digest)
        self.new.append(_line(absolute, self.known[absolute]))
        return digest

    def save(self) -> None:
        """Append the files read since the last save; rewrite the table when most of its lines are outdated.

        A table that cannot be written costs a warning, not the run: the digests are then worked out again next
        time.
        """
        if not self.new:
            return
        try:
            with file_lock(self.dir / LOCK):
                table = self.dir / TABLE
                if self.lines + len(self.new) > 2 * len(self.known) + 1000:
                    self._rewrite(table)
                else:
                    with open(table, "a", encoding="utf-8") as f:
                        f.write("".join(line + "\n" for line in self.new))
            self.lines += len(self.new)
            self.new = []
        except OSError as err:
            log.warning("cannot write the audio digest table in %s (%s): audio files are read again next time",
                        self.dir, err)

    def _rewrite(self, table: Path) -> None:
        """The table with one line a file: what is on disk now (others may have added to it) and this process's."""
        merged = DigestCache(self.dir, self.compute).known
        merged.update(self.known)
        fd, tmp = fsmode.temp_file(self.dir, ".digests.tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(_line(path, known) + "\n" for path, known in merged.items()))
            os.replace(tmp, table)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.known, self.lines = merged, len(merged) - len(self.new)
