"""Rendered parts of a dataset index, kept by what they were rendered from: a rebuild renders only what is new.

An index is rebuilt whole whenever its data file changes (`trainer.encode.index_build`), but rendering (the chat
template and the tokenizer) is most of a build, and the usual change is an append: more lines in a JSONL
manifest, more items in a ChatML list, more files in a data directory. A build cuts the conversations into parts
of a fixed count, in data order, and keys each part by a digest of everything its rendering reads (the text
tokenizer's identity, and each conversation's messages, source and target flags). A part whose key is in the
store is loaded instead of rendered; after an append only the last, partial part and the new ones are rendered.
An edit in the middle shifts the parts after it, and those are rendered again.

The store of one data file lives beside its indexes (`<index name>.parts/`), one `.npz` a part, written under a
temporary name and renamed into place, so a killed build leaves either a whole part or a temporary file, which
the next build (holding the same lock) removes. After a build, the parts it did not use are removed: the store
holds one build's worth of parts, never a history of edits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from trainer import fsmode
from trainer.data.samples import BadSample, Conversation
from trainer.encode.index_chunks import Chunk

log = logging.getLogger(__name__)

TEMP_PREFIX = ".part.tmp-"
SUFFIX = ".npz"
PART_VERSION = 1  # bump when a part's columns change meaning
STRINGS = ("ids", "sources", "speakers")


def part_key(identity: str, rendered_from: Iterable[bytes]) -> str:
    """The key of a part: the renderer's identity and, in order, each conversation's rendering input."""
    h = hashlib.sha256(identity.encode())
    for blob in rendered_from:
        h.update(len(blob).to_bytes(8, "little"))  # lengths first: no two sequences of blobs hash alike
        h.update(blob)
    return h.hexdigest()[:32]


class PartStore:
    """The rendered parts of one data file's index, as `.npz` files of named NumPy columns.

    `identity` is what of the renderer decides a part's contents besides its conversations: the text tokenizer
    and its template (`index_build.tokenizer_fingerprint`), the codebooks a clip's length counts.
    """

    def __init__(self, directory: Path, identity: str = "") -> None:
        self.dir, self.identity = directory, f"v{PART_VERSION}\n{identity}"
        self.used: set[str] = set()

    def path(self, key: str) -> Path:
        """Where the part with `key` is kept."""
        return self.dir / f"{key}{SUFFIX}"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The columns of part `key`, or None when it is not stored (or is unreadable, and then it is removed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                columns = {name: data[name] for name in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            log.warning("rendered part %s is unreadable (%s): rendering it again", path, err)
            path.unlink(missing_ok=True)
            return None
        self.used.add(key)
        return columns

    def save(self, key: str, columns: dict[str, np.ndarray]) -> None:
        """Store part `key` whole: written under a temporary name, then renamed into place."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = fsmode.temp_file(self.dir, TEMP_PREFIX, SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **columns)
            os.replace(tmp, self.path(key))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.used.add(key)

    def remove_temporary(self) -> None:
        """Temporary files of builds that were killed while saving; call it holding the index's build lock."""
        if self.dir.is_dir():
            for stale in self.dir.glob(f"{TEMP_PREFIX}*"):
                stale.unlink(missing_ok=True)

    def keep_only_used(self) -> None:
        """Remove every part that this build neither loaded nor saved: no later build of this file needs it."""
        if not self.dir.is_dir():
            return
        for part in self.dir.glob(f"*{SUFFIX}"):
            if part.name[: -len(SUFFIX)] not in self.used and not part.name.startswith("."):
                part.unlink(missing_ok=True)


def chunk_columns(chunk: Chunk) -> dict[str, np.ndarray]:
    """A chunk as named arrays, the form a part is stored in (no pickles: a part is data, never code)."""
    columns = {
        "count": np.asarray([chunk.count], np.int64), "tokens": chunk.tokens, "token_lens": chunk.token_lens,
        "keys": np.asarray([k.encode() for k in chunk.keys], dtype="S64"), "clips": chunk.clips,
        "clip_lens": chunk.clip_lens, "targets": chunk.targets, "text": chunk.text, "text_lens": chunk.text_lens,
        "lengths": chunk.lengths,
        "bad": np.frombuffer(json.dumps([[b.source, b.reason] for b in chunk.bad]).encode(), np.uint8),
    }
    for name in STRINGS:
        data, lengths = chunk.strings[name]
        columns[name], columns[f"{name}_lens"] = np.frombuffer(data, np.uint8), lengths
    return columns


def chunk_of(columns: dict[str, np.ndarray], part: str = "") -> Chunk:
    """The chunk `chunk_columns` stored."""
    return Chunk(
        count=int(columns["count"][0]), tokens=columns["tokens"], token_lens=columns["token_lens"],
        keys=[k.decode() for k in columns["keys"].tolist()], clips=columns["clips"], clip_lens=columns["clip_lens"],
        targets=columns["targets"], text=columns["text"], text_lens=columns["text_lens"], lengths=columns["lengths"],
        strings={name: (columns[name].tobytes(), columns[f"{name}_lens"]) for name in STRINGS},
        bad=[BadSample(source, reason) for source, reason in json.loads(columns["bad"].tobytes())], part=part,
    )


class StoredChunks:
    """A chunk renderer (`ChunkRenderer.chunk`) through a part store: a part rendered before is loaded instead.

    Called in the builder or in a forked worker: the part's key travels back on the chunk (`Chunk.part`), so the
    builder knows which parts its index used whichever process rendered them.

    Args:
        store (`PartStore`):
            The data file's parts.
        render_chunk (`Callable`):
            Renders a list of conversations into a `Chunk`.
        keys (`dict`):
            Every clip's code-cache key (content digest included: a replaced file is another key).
        frames (`Callable`):
            Frames of a cache entry, None when it is missing: a clip encoded since the last build turns a bad
            sample good, so it is part of the key.
    """

    def __init__(self, store: PartStore, render_chunk: Callable[[list[Conversation]], Chunk], *, keys: dict,
                 frames: Callable[[str], int | None]) -> None:
        self.store, self.render_chunk, self.keys, self.frames = store, render_chunk, keys, frames
        self.loaded = self.rendered = 0

    def rendering_input(self, conv: Conversation) -> bytes:
        """Everything of a conversation that its rows in the index are made from."""
        clip_keys = [self.keys[c] for c in conv.clips()]
        return json.dumps([conv.id, conv.source, conv.speaker, conv.start_index, sorted(conv.reference_turns),
                           conv.messages, clip_keys, [self.frames(k) for k in clip_keys]],
                          ensure_ascii=False, sort_keys=True, default=str).encode()

    def __call__(self, convs: list[Conversation]) -> Chunk:
        """The chunk of `convs`: loaded from the store when this part was rendered before, else rendered and saved."""
        key = part_key(self.store.identity, map(self.rendering_input, convs))
        columns = self.store.load(key)
        if columns is not None:
            self.loaded += 1
            return chunk_of(columns, key)
        chunk = self.render_chunk(convs)
        self.store.save(key, chunk_columns(chunk))
        self.rendered += 1
        chunk.part = key
        return chunk
