"""The dataset index: every usable sample of a data file, tokenized, in flat NumPy arrays on disk.

A rank opens the arrays memory-mapped, so the page cache holds one copy per node and a rank's own memory does
not grow with the dataset: a sample is read back (its token ids, the cache keys of its clips, which clips are
targets, its text targets, its length, id, source and speaker) only when the data loader asks for it, and its
codes come from the code cache then. NumPy memmaps rather than Arrow: every column is a flat integer array plus
an offsets array, which `np.load(mmap_mode="r")` maps with no dependency beyond NumPy and no conversion on
access; Arrow would add pyarrow (about 100 MB) to the image for the same layout.

Files of one index directory (`n` samples, `s` segments = audio clips in all, `t` tokens):

    tokens.npy int32[t], tokens_offsets.npy int64[n+1]       the rendered conversation, one placeholder per clip
    clips.npy int32[s], clips_offsets.npy int64[n+1]         each clip's row in keys.npy (cache keys, S64)
    targets.npy bool[s]                                      is the clip a training target
    text.npy int32[...], text_offsets.npy int64[n+1]         text target positions (into the sample's tokens)
    lengths.npy int32[n]                                     expanded length, the length grouping's key
    ids/sources/speakers: *.npy uint8 UTF-8 + *_offsets.npy  strings
    meta.json                                                the fingerprint and the counts
    bad.jsonl                                                every bad sample, `{"source", "reason"}` a line
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, overload

import numpy as np

from trainer import fsmode
from trainer.data.samples import BadSample
from trainer.encode.collator import EncodedSample
from trainer.encode.index_chunks import Chunk

META = "meta.json"
BAD = "bad.jsonl"
FLUSH_ROWS = 1 << 16  # rows buffered before a column's chunk goes to its temporary file
CODES_KEPT = 256  # decoded code arrays a reader keeps: a batch's clips, never a growing share of the corpus


class _Column:
    """One flat column written in chunks to a raw file, with an offsets column when it is ragged."""

    def __init__(self, directory: Path, name: str, dtype: Any, ragged: bool) -> None:
        self.path, self.dtype, self.ragged = directory / f"{name}.raw", np.dtype(dtype), ragged
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed in finish()
        self.arrays: list[np.ndarray] = []  # rows added since the last flush, a chunk's column at a time
        self.buffered = 0
        self.offsets: list[np.ndarray] = []  # each row's end, of the rows not yet flushed
        self.count = 0
        self.offsets_path = directory / f"{name}_offsets.raw"
        self.offsets_file = open(self.offsets_path, "wb") if ragged else None  # noqa: SIM115
        if self.offsets_file is not None:
            self.offsets_file.write(np.zeros(1, np.int64).tobytes())

    def add_many(self, values: np.ndarray, lengths: np.ndarray | None = None) -> None:
        """Rows at once: `values` concatenated, and for a ragged column each row's length."""
        self.arrays.append(np.asarray(values, dtype=self.dtype))
        if self.ragged:
            assert lengths is not None
            self.offsets.append(self.count + np.cumsum(lengths, dtype=np.int64))
            self.count += int(np.sum(lengths, dtype=np.int64))
        self.buffered += len(values) if lengths is None else len(lengths)
        if self.buffered >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        for array in self.arrays:
            self.file.write(array.tobytes())
        self.arrays, self.buffered = [], 0
        if self.offsets_file is not None:
            for ends in self.offsets:
                self.offsets_file.write(ends.tobytes())
            self.offsets = []

    def finish(self, directory: Path, name: str) -> None:
        """Write the `.npy` files (header + the raw bytes) and drop the raw ones."""
        self.flush()
        self.file.close()
        _raw_to_npy(self.path, directory / f"{name}.npy", self.dtype)
        if self.offsets_file is not None:
            self.offsets_file.close()
            _raw_to_npy(self.offsets_path, directory / f"{name}_offsets.npy", np.dtype(np.int64))


def _raw_to_npy(raw: Path, npy: Path, dtype: np.dtype) -> None:
    count = raw.stat().st_size // dtype.itemsize
    with open(npy, "wb") as out, open(raw, "rb") as src:
        np.lib.format.write_array_header_1_0(
            out, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (count,)}
        )
        shutil.copyfileobj(src, out, 1 << 22)
    raw.unlink()


class IndexWriter:
    """Appends samples to a new index in a temporary directory; `commit` renames it into place.

    Columns stream to disk in chunks, so writing an index of millions of samples holds only the distinct clip
    keys and one chunk per column in memory. A killed writer leaves a `.tmp-` directory that no reader opens.
    """

    def __init__(self, final: Path, meta: dict[str, Any]) -> None:
        self.final, self.meta = final, meta
        final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = fsmode.temp_dir(final.parent, f".{final.name}.tmp-")
        self.columns = {
            "tokens": _Column(self.tmp, "tokens", np.int32, True),
            "clips": _Column(self.tmp, "clips", np.int32, True),
            "targets": _Column(self.tmp, "targets", np.bool_, False),
            "text": _Column(self.tmp, "text", np.int32, True),
            "lengths": _Column(self.tmp, "lengths", np.int32, False),
            "ids": _Column(self.tmp, "ids", np.uint8, True),
            "sources": _Column(self.tmp, "sources", np.uint8, True),
            "speakers": _Column(self.tmp, "speakers", np.uint8, True),
        }
        self.keys: dict[str, int] = {}
        self.bad_file = open(self.tmp / BAD, "w", encoding="utf-8")  # noqa: SIM115 - closed in commit()
        self.count = self.bad_count = 0

    def add_many(self, chunk: Chunk) -> None:
        """A chunk's usable samples, column by column (its bad ones go through `add_bad`)."""
        c = self.columns
        rows = np.asarray([self.keys.setdefault(k, len(self.keys)) for k in chunk.keys], np.int32)
        c["tokens"].add_many(chunk.tokens, chunk.token_lens)
        c["clips"].add_many(rows[chunk.clips] if len(rows) else chunk.clips, chunk.clip_lens)
        c["targets"].add_many(chunk.targets)
        c["text"].add_many(chunk.text, chunk.text_lens)
        c["lengths"].add_many(chunk.lengths)
        for name in ("ids", "sources", "speakers"):
            data, lengths = chunk.strings[name]
            c[name].add_many(np.frombuffer(data, np.uint8), lengths)
        self.count += chunk.count

    def add_bad(self, bad: BadSample) -> None:
        """Record a bad sample in the index, so a reused index still reports it."""
        self.bad_file.write(json.dumps({"source": bad.source, "reason": bad.reason}, ensure_ascii=False) + "\n")
        self.bad_count += 1

    def commit(self) -> Path:
        """Finish every file and rename the directory into place (an index already there is replaced)."""
        for name, column in self.columns.items():
            column.finish(self.tmp, name)
        np.save(self.tmp / "keys.npy", np.asarray(list(self.keys), dtype="S64"))
        self.bad_file.close()
        meta = {**self.meta, "samples": self.count, "bad_samples": self.bad_count}
        (self.tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
        if self.final.exists():
            shutil.rmtree(self.final, ignore_errors=True)
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if not (self.final / META).is_file():  # another node's writer won the rename: theirs is the same index
                raise
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        """Close every file and remove the unfinished directory: a failed build leaves nothing to mistake."""
        for column in self.columns.values():
            column.file.close()
            if column.offsets_file is not None:
                column.offsets_file.close()
        self.bad_file.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class SampleIndex:
    """A committed index, memory-mapped: `record(i)` gives sample i's fields."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.meta = json.loads((directory / META).read_text())

        def load(name: str) -> np.ndarray:
            return np.load(directory / f"{name}.npy", mmap_mode="r")

        self.tokens, self.token_offsets = load("tokens"), load("tokens_offsets")
        self.clips, self.clip_offsets = load("clips"), load("clips_offsets")
        self.targets, self.text, self.text_offsets = load("targets"), load("text"), load("text_offsets")
        self.lengths, self.keys = load("lengths"), load("keys")
        self.strings = {name: (load(name), load(f"{name}_offsets")) for name in ("ids", "sources", "speakers")}

    def __len__(self) -> int:
        return len(self.lengths)

    def __getstate__(self) -> dict[str, Any]:
        # A data loader worker (spawned) gets the directory and maps the files itself: pickling a memmap would
        # copy the whole column into every worker.
        return {"dir": self.dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["dir"])  # type: ignore[misc]

    def string(self, name: str, i: int) -> str:
        """Sample i's value of the string column `name` (ids, sources, speakers)."""
        data, offsets = self.strings[name]
        return bytes(data[offsets[i]:offsets[i + 1]]).decode()

    def clip_keys(self, i: int) -> list[str]:
        """The code-cache keys of sample i's clips, in order."""
        rows = self.clips[self.clip_offsets[i]:self.clip_offsets[i + 1]]
        return [self.keys[r].decode() for r in rows]

    def bad_samples(self) -> Iterator[BadSample]:
        """Every bad sample of the data file, in input order, read line by line."""
        with open(self.dir / BAD, encoding="utf-8") as f:
            for line in f:
                item = json.loads(line)
                yield BadSample(item["source"], item["reason"])


class IndexView:
    """The samples of an index (all, or the `rows` of a split) as `EncodedSample`s, codes from the code cache.

    What `SampleDataset` reads in place of a list: `len`, `view[i]` and `lengths()`. The only per-sample memory is
    `rows` (a split's row numbers, int64), and the lengths array a sampler asks for.
    """

    def __init__(self, index: SampleIndex, cache: Any, rows: np.ndarray | None = None) -> None:
        self.index, self.cache, self.rows = index, cache, rows
        self._codes: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.index) if self.rows is None else len(self.rows)

    def _row(self, i: int) -> int:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return int(i if self.rows is None else self.rows[i])

    def _codes_of(self, key: str) -> np.ndarray:
        codes = self._codes.get(key)
        if codes is None:
            codes = self.cache.get(key)
            if codes is None:  # the cache lost an entry after the index was built: never train on other codes
                raise FileNotFoundError(f"code cache entry {self.cache.path(key)} is missing; run prepare again")
            self._codes[key] = codes
            if len(self._codes) > CODES_KEPT:
                self._codes.popitem(last=False)
        else:
            self._codes.move_to_end(key)
        return codes

    @overload
    def __getitem__(self, i: int) -> EncodedSample: ...

    @overload
    def __getitem__(self, i: slice) -> list[EncodedSample]: ...

    def __getitem__(self, i: int | slice) -> EncodedSample | list[EncodedSample]:
        """Sample i, or a list for a slice, as the list of samples the in-memory path holds gives them."""
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        r, ix = self._row(i), self.index
        lo, hi = ix.clip_offsets[r], ix.clip_offsets[r + 1]
        return EncodedSample(
            id=ix.string("ids", r),
            source=ix.string("sources", r),
            input_ids=ix.tokens[ix.token_offsets[r]:ix.token_offsets[r + 1]].tolist(),
            codes=[self._codes_of(k) for k in ix.clip_keys(r)],
            is_target=ix.targets[lo:hi].tolist(),
            text_target_positions=ix.text[ix.text_offsets[r]:ix.text_offsets[r + 1]].tolist(),
        )

    def lengths(self) -> np.ndarray:
        """Every sample's expanded length, in view order (memory-mapped for a whole index)."""
        return self.index.lengths if self.rows is None else np.asarray(self.index.lengths[self.rows])

    def speaker(self, i: int) -> str | None:
        """Sample i's speaker, or None when the data names none."""
        return self.index.string("speakers", self._row(i)) or None
