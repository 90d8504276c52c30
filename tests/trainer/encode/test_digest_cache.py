"""Audio digests remembered by path, size and modification time: the same as reading the file, read once."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from trainer.encode.code_cache import file_digest
from trainer.encode.digest_cache import TABLE, DigestCache


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes, mtime_ns: int) -> Path:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_a_remembered_digest_is_the_files_and_is_not_read_again_while_size_and_time_match(tmp_path) -> None:
    audio = write(tmp_path / "a.wav", b"first take", 10**18)
    first = DigestCache(tmp_path / "cache", file_digest)
    assert first.digest(str(audio)) == sha(b"first take")
    first.save()
    # Same size, same time, other bytes: the file is not read again, so the remembered digest comes back
    # (the documented limit: this is the change no size-and-time check can see).
    write(audio, b"other take", 10**18)
    assert DigestCache(tmp_path / "cache", file_digest).digest(str(audio)) == sha(b"first take")
    # A new modification time, or a new size, and the file is read again.
    write(audio, b"other take", 10**18 + 1)
    second = DigestCache(tmp_path / "cache", file_digest)
    assert second.digest(str(audio)) == sha(b"other take")
    write(audio, b"a longer take", 10**18 + 1)
    assert second.digest(str(audio)) == sha(b"a longer take")


def test_relative_and_absolute_paths_share_an_entry(tmp_path, monkeypatch) -> None:
    audio = write(tmp_path / "b.wav", b"take", 10**18)
    cache = DigestCache(tmp_path / "cache", file_digest)
    cache.digest(str(audio))
    cache.save()
    monkeypatch.chdir(tmp_path)
    write(audio, b"tak2", 10**18)  # unread: the relative path finds the absolute one's entry
    assert DigestCache(tmp_path / "cache", file_digest).digest("b.wav") == sha(b"take")


def test_a_torn_last_line_is_skipped_and_its_file_read_again(tmp_path) -> None:
    audio = [write(tmp_path / f"{i}.wav", f"take {i}".encode(), 10**18) for i in range(3)]
    cache = DigestCache(tmp_path / "cache", file_digest)
    for a in audio:
        cache.digest(str(a))
    cache.save()
    table = tmp_path / "cache" / TABLE
    table.write_bytes(table.read_bytes()[:-20])  # a writer killed in the middle of its line
    again = DigestCache(tmp_path / "cache", file_digest)
    assert sorted(again.known) == sorted(str(a) for a in audio[:2])
    assert [again.digest(str(a)) for a in audio] == [sha(f"take {i}".encode()) for i in range(3)]


def test_an_outdated_table_is_rewritten_with_one_line_a_file(tmp_path) -> None:
    audio = write(tmp_path / "c.wav", b"v0", 10**18)
    for n in range(1, 1300):  # each change appends a line: the table is rewritten before it holds 1,002
        write(audio, f"v{n}".encode(), 10**18 + n)
        cache = DigestCache(tmp_path / "cache", file_digest)
        cache.digest(str(audio))
        cache.save()
    lines = (tmp_path / "cache" / TABLE).read_text().splitlines()
    assert len(lines) < 1002
    last = json.loads(lines[-1])
    assert last["digest"] == sha(b"v1299") and last["mtime_ns"] == 10**18 + 1299
    assert DigestCache(tmp_path / "cache", file_digest).digest(str(audio)) == sha(b"v1299")


def test_an_unwritable_table_costs_a_warning_not_the_digests(tmp_path, caplog) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    audio = write(tmp_path / "d.wav", b"take", 10**18)
    cache = DigestCache(blocked / "cache", file_digest)  # its directory cannot be made
    assert cache.digest(str(audio)) == sha(b"take")
    cache.save()
    assert "cannot write the audio digest table" in caplog.text
