"""Use the dataset index when it is current, build it when it is not: one builder per node, the others wait.

An index is current when its fingerprint matches: the data file's (or every file of a data directory's) path,
size and modification time, the options that shape samples, and the text tokenizer and its chat template
(`fingerprint`). It lives beside the code cache, under the audio tokenizer's namespace (the cache keys it holds
are that tokenizer's), as `index/<data file name>-<path hash>-<fingerprint>/`. Local rank 0 builds it under a file
lock (two jobs, or two nodes on one volume, never build one index twice at once) while the other ranks wait at
a barrier; the build writes to a temporary directory and renames it into place, so a reader never sees half an
index. An audio file replaced under the same name with the data file untouched is not noticed: run `prepare`
again after touching the data file. Rendered chunks are kept in the data file's part store
(`trainer.encode.part_store`), so a rebuild after an append renders only what is new.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trainer import dist
from trainer.config.options import DataArgs
from trainer.data.samples import BadSample
from trainer.encode.code_cache import CodeCache
from trainer.encode.collator import Layout
from trainer.encode.counter import Counter
from trainer.encode.file_lock import file_lock
from trainer.encode.index_chunks import ChunkRenderer
from trainer.encode.part_store import PartStore, StoredChunks
from trainer.encode.sample_index import META, IndexWriter, SampleIndex

log = logging.getLogger(__name__)

INDEX_VERSION = 1  # bump when the files of an index change meaning
# The options that change which samples there are or how they render (DataArgs field names).
SHAPING_OPTIONS = (
    "system_prompt", "max_audio_seconds", "min_audio_seconds", "data_format", "text_column", "audio_column",
    "speaker_column", "reference_clips", "reference_max_seconds", "seed_split",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "config.json")


def data_files(path: str) -> Iterator[tuple[str, int, int]]:
    """(path, size, mtime_ns) of the data file, or of every file under a data directory, in a fixed order."""
    if os.path.isfile(path):
        st = os.stat(path)
        yield os.path.abspath(path), st.st_size, st.st_mtime_ns
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            yield os.path.abspath(full), st.st_size, st.st_mtime_ns


def tokenizer_fingerprint(tokenizer: Any, layout: Layout) -> str:
    """What of the text side decides the token ids: the tokenizer's files, its chat template, the layout ids."""
    h = hashlib.sha256(repr(layout).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    source = Path(str(getattr(tokenizer, "name_or_path", "")))
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            h.update(name.encode())
            h.update(hashlib.sha256((source / name).read_bytes()).digest())
    return h.hexdigest()


def fingerprint(args: DataArgs, path: str, text_identity: str) -> str:
    """The key of an index: data files (size, mtime), the shaping options and the text tokenizer."""
    h = hashlib.sha256(f"v{INDEX_VERSION}\n{text_identity}\n".encode())
    h.update(json.dumps({name: getattr(args, name) for name in SHAPING_OPTIONS}, sort_keys=True).encode())
    for entry in data_files(path):
        h.update(repr(entry).encode())
    return h.hexdigest()[:24]


def _stem(path: str) -> str:
    """The data file's name and a digest of its absolute path: two `train.json` in two folders stay apart."""
    absolute = os.path.abspath(path)
    return f"{Path(absolute).name}-{hashlib.sha256(absolute.encode()).hexdigest()[:8]}"


def index_dir(cache: CodeCache, path: str, key: str) -> Path:
    """Where the index of `path` with fingerprint `key` lives, beside the code cache's entries."""
    return cache.dir / "index" / f"{_stem(path)}-{key}"


def parts_dir(cache: CodeCache, path: str) -> Path:
    """Where the rendered parts of `path`'s indexes are kept (`trainer.encode.part_store`): one store a data file."""
    return cache.dir / "index" / f"{_stem(path)}.parts"


def is_current(directory: Path, key: str) -> bool:
    """Whether the index in `directory` was built for the fingerprint `key`, so it can be used as it is."""
    meta = directory / META
    return meta.is_file() and json.loads(meta.read_text()).get("fingerprint") == key


def open_index(args: DataArgs, path: str, *, cache: CodeCache, text_identity: str,
               build: Callable[[IndexWriter, PartStore], None]) -> SampleIndex:
    """The current index of `path`, built first by local rank 0 (`build` fills a writer) when there is none.

    `build` also gets the data file's part store, whose parts from an earlier build it reuses; after a build,
    the parts it did not use are removed. Both under the build's lock, so no other builder's parts go.

    Every rank passes the barrier, whether or not an index had to be built, so that no rank reads one that
    local rank 0 is still writing.
    """
    key = fingerprint(args, path, text_identity)
    final = index_dir(cache, path, key)
    if dist.local_rank() == 0 and not is_current(final, key):
        with file_lock(final.parent / f"{final.name}.lock"):
            if not is_current(final, key):  # another job or node may have built it while this one waited
                log.info("building the dataset index of %s in %s", path, final)
                parts = PartStore(parts_dir(cache, path), text_identity)
                # builds of other fingerprints of this file (other options) share its parts: one at a time
                with file_lock(parts.dir.with_name(f"{parts.dir.name}.lock")):
                    parts.remove_temporary()
                    writer = IndexWriter(final, {"fingerprint": key, "data": os.path.abspath(path)})
                    try:
                        build(writer, parts)
                        writer.commit()
                    except BaseException:
                        writer.abort()
                        raise
                    parts.keep_only_used()
                _remove_stale(final)
    dist.barrier(poll=dist.raise_if_peer_stopped)
    if not is_current(final, key):
        raise RuntimeError(f"{final}: the dataset index local rank 0 built is missing")
    return SampleIndex(final)


def _remove_stale(final: Path) -> None:
    """Indexes of the same data file with another fingerprint: nothing will open them again."""
    stem = final.name.rsplit("-", 1)[0]
    for other in final.parent.glob(f"{stem}-*"):
        if other != final and other.is_dir() and not other.name.startswith("."):
            shutil.rmtree(other, ignore_errors=True)


class FrameCounts:
    """Frames of each cache entry, read from its `.npy` header once: an index's lengths without its codes."""

    def __init__(self, cache: CodeCache) -> None:
        self.cache, self.frames = cache, {}

    def __call__(self, key: str) -> int | None:
        """Frames of cache entry `key`, or None when it is not in the cache."""
        if key not in self.frames:
            p = self.cache.path(key)
            self.frames[key] = int(np.load(p, mmap_mode="r").shape[1]) if p.is_file() else None
        return self.frames[key]


CHUNK = 1000  # conversations a worker renders per task: large enough that pickling the results stays cheap

_work_in_child: Callable[[list], Any] | None = None  # set before the workers fork; they inherit it
_items_in_child: list = []


def _chunk_in_child(start: int) -> Any:
    assert _work_in_child is not None
    return _work_in_child(_items_in_child[start:start + CHUNK])


def _worker_signals() -> None:
    """A worker ends at once on the pool's SIGTERM, whatever handler it inherited; a Ctrl-C is the builder's.

    A forked worker inherits the builder's Python signal handlers, the trainer's graceful stop among them: one
    that notes the signal and carries on leaves the worker running after `Pool.terminate`, whose join then
    waits forever; one that raises runs Python code inside the worker's pipe writes. The kernel's default
    action runs none. A killed worker may leave a part's temporary file, which the next build removes.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def in_chunks(items: list, work: Callable[[list], Any], workers: int) -> Iterator[Any]:
    """`work(chunk)` of each run of `CHUNK` items, in order: in this process, or in `workers` forked processes.

    Forked, so that the workers inherit the tokenizer and the conversations instead of pickling them (pickled,
    rendering 100,000 took 1.6 times as long: docs/performance.md#corpus-scale); each task is a range of items,
    and only the result (an index chunk's columns) comes back. Nothing may stand between the pool's terminate
    and a worker's exit (`_worker_signals`).
    """
    global _work_in_child, _items_in_child
    starts = range(0, len(items), CHUNK)
    if workers <= 1 or len(items) <= CHUNK:
        for start in starts:
            yield work(items[start:start + CHUNK])
        return
    import multiprocessing

    _work_in_child, _items_in_child = work, items
    # The workers' own collections then never walk (and so copy, page by page) the conversations they inherit
    gc.freeze()
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_signals) as pool:
            yield from pool.imap(_chunk_in_child, starts)
    finally:
        gc.unfreeze()
        _work_in_child, _items_in_child = None, []


def write_samples(writer: IndexWriter, convs: list, bad: list[BadSample], *, keys: dict, cache: CodeCache,
                  render: Callable[[Any], tuple[list[int], list[bool], list[int]] | BadSample],
                  num_codebooks: int, progress: bool, between: Callable[[], None], workers: int = 1,
                  tokenizer: Any = None, layout: Layout | None = None, parts: PartStore | None = None) -> None:
    """Every read-time bad sample, then each conversation rendered (or found bad) into `writer`, in input order.

    `render(conv)` is the tokenization `trainer.encode.prepare` does for the in-memory path, so both paths build
    the same samples; with the `tokenizer` and `layout` it uses, chunks take the checked fast path of
    `trainer.encode.index_chunks`. A clip whose codes are missing from the cache makes its sample bad, as there.
    `workers` processes render in parallel (`--prepare_workers`). With `parts`, a chunk rendered by an earlier
    build of the same data file is loaded instead of rendered again (`trainer.encode.part_store`).
    """
    for b in bad:
        writer.add_bad(b)
    frames = FrameCounts(cache)
    renderer = ChunkRenderer(render, tokenizer=tokenizer, layout=layout, keys=keys, frames=frames,
                             num_codebooks=num_codebooks)
    work = renderer.chunk if parts is None else StoredChunks(parts, renderer.chunk, keys=keys, frames=frames)
    counter = Counter(len(convs), "indexing samples", "sample") if progress else None
    for chunk in in_chunks(convs, work, workers):
        between()
        if parts is not None:
            parts.used.add(chunk.part)  # a worker's store is a copy: the builder records what its index holds
        for b in chunk.bad:
            writer.add_bad(b)
        writer.add_many(chunk)
        if counter is not None:
            counter.advance(chunk.count + len(chunk.bad))
    if counter is not None:
        counter.close()
