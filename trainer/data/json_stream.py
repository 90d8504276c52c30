"""Read the items of a top-level JSON list one at a time, so that a large ChatML file is never held whole.

`json.load` of a 1 GB list holds every item as Python objects at once, several times the file's size; a reader
that needs one sample at a time (`trainer.data.chatml`) only needs one item, so this module decodes each item
with `json.JSONDecoder.raw_decode` from a buffer refilled in bounded chunks. The buffer holds about one chunk
plus the item being decoded: an item longer than a chunk grows it until the item decodes.

The items are the ones `json.load` gives (the same decoder, the same UTF-8 with or without a BOM, the same
newline translation of text mode); a broken file is a `DataError` naming the file, the line and column, the
item (counted from 0, as the sample sources `train.json[41]` count) and what was expected there.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from trainer.errors import DataError

CHUNK_SIZE = 1 << 18  # bytes read at a time; reading peaks at 4 to 7 times this. 64 KiB to 1 MiB read as fast
WHITESPACE = " \t\n\r"  # JSON's whitespace, all of it
# A decode that stops this close to the end of the buffer may have been cut by it (a number's "1." or "1e",
# a literal's "tru", a "\u12" escape): read on and decode again before trusting the result or the error.
_CUT_MARGIN = 16
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def starts_a_list(path: str) -> bool:
    """Whether the file's first character after whitespace (and a BOM) is `[`; False for an empty file.

    Anything else is read whole by the caller, whose messages for a dict or a scalar top level name what the
    file is instead.
    """
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(codecs.BOM_UTF8)
        while head:
            if rest := head.lstrip(WHITESPACE.encode()):
                return rest[:1] == b"["
            head = f.read(4096)
    return False


def iter_json_list(path: str, chunk_size: int | None = None) -> Iterator[Any]:
    """Each item of the JSON list in `path`, in file order, reading `chunk_size` (`CHUNK_SIZE`) bytes at a time.

    Raises:
        DataError: The file does not start with `[` (check `starts_a_list` first to word that case), is not
            valid JSON (the message names the line, the column and the item), is not UTF-8, or holds
            anything after the list's closing `]`.
    """
    with open(path, "rb") as f:
        yield from _Items(path, f, chunk_size or CHUNK_SIZE).items()


class _Items:
    """The sliding buffer over one open file and where its start is in the file (for line and column).

    The file's bytes are decoded here: reading it in text mode instead peaked 1.3 to 1.5 times higher
    (tracemalloc, 256 KiB chunks, an ASCII list and one with Arabic text). It decodes as text mode does
    (UTF-8, one leading BOM dropped, newlines translated), so the items, lines and columns are `json.load`'s.
    """

    def __init__(self, path: str, f: BinaryIO, chunk_size: int) -> None:
        self.path, self.f, self.chunk_size = path, f, max(1, chunk_size)
        self.decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8-sig")(), translate=True)
        self.buf, self.pos, self.eof = "", 0, False
        self.lines_before = 0  # newlines before the buffer's start
        self.column_before = 0  # characters between the last of them and the buffer's start

    def items(self) -> Iterator[Any]:
        if self._next_char() != "[":
            raise self._error("expected '[' to open the list of samples")
        self.pos += 1
        if self._next_char() == "]":
            self.pos += 1
            return self._expect_end()
        index = 0
        while True:
            yield self._item(index)
            char = self._next_char()
            if char == "]":
                self.pos += 1
                return self._expect_end()
            if char != ",":
                got = "the end of the file" if char == "" else repr(char)
                raise self._error(f"expected ',' or ']' after item {index}, got {got}")
            self.pos += 1
            index += 1
            if self._next_char() == "]":
                raise self._error(f"expected item {index} after ',', got ']' (a trailing comma)")

    def _item(self, index: int) -> Any:
        """Decode the item at the cursor, reading on while the end of the buffer may have cut it."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as err:
                cut = err.msg.startswith("Unterminated string") or err.pos >= len(self.buf) - _CUT_MARGIN
                if cut and not self.eof:
                    self._read_more()  # moves the buffer: decode again, at the end of the file too
                    continue
                raise self._error(f"in item {index}: {err.msg}", err.pos) from None
            if end >= len(self.buf) - _CUT_MARGIN and not self.eof:
                self._read_more()  # a number may go on ("12" of "1234"): decode it again with what follows
                continue
            self.pos = end
            return value

    def _next_char(self) -> str:
        """The next non-whitespace character (the cursor moved onto it), or "" at the end of the file."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._read_more():
                return ""

    def _expect_end(self) -> None:
        if self._next_char() != "":
            raise self._error("unexpected data after the list's closing ']'")

    def _read_more(self) -> bool:
        """Drop what was decoded, then append at least a chunk; False at the end of the file.

        It appends as much as is still held when that is more, so that an item of many chunks costs a number
        of decodes logarithmic in its length, not linear.
        """
        if self.eof:
            return False
        self._drop_consumed()
        more, raw = "", b"-"
        while not more and raw:  # a chunk may end inside a character, or hold only the BOM
            raw = self.f.read(max(self.chunk_size, len(self.buf)))
            try:
                more = self.decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as err:
                line = self._where(len(self.buf))[0] + raw.count(b"\n", 0, max(0, err.start))
                raise DataError(f"{self.path}: not valid JSON: not UTF-8 text at line {line} ({err.reason})") from None
        self.eof = not raw
        self.buf += more  # at the end, what the decoder still held (a last "\r" as "\n")
        return bool(more)

    def _drop_consumed(self) -> None:
        if not self.pos:
            return
        newlines = self.buf.count("\n", 0, self.pos)
        if newlines:
            self.lines_before += newlines
            self.column_before = self.pos - self.buf.rfind("\n", 0, self.pos) - 1
        else:
            self.column_before += self.pos
        self.buf, self.pos = self.buf[self.pos:], 0

    def _where(self, pos: int) -> tuple[int, int]:
        """(line, column), both from 1 as `json` counts them, of a position in the buffer."""
        newlines = self.buf.count("\n", 0, pos)
        if newlines:
            return self.lines_before + newlines + 1, pos - self.buf.rfind("\n", 0, pos)
        return self.lines_before + 1, self.column_before + pos + 1

    def _error(self, what: str, pos: int | None = None) -> DataError:
        line, column = self._where(self.pos if pos is None else pos)
        return DataError(f"{self.path}: not valid JSON at line {line} column {column}: {what}")
