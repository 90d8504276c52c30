"""The audio code cache: every audio file is encoded once per audio tokenizer, never during training.

Codes are keyed by the SHA-256 of the file's bytes under a directory named for the audio tokenizer's
identity (a hash of its config and weights), so a changed clip or a different tokenizer can never be
served stale codes, and the same clip used by two samples or two runs is encoded once. Each entry is
written to a temporary name and renamed into place, so a crash never leaves a truncated entry and
several processes may fill one cache at once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from trainer import fsmode
from trainer.data.samples import Clip
from trainer.encode.counter import Counter

HASH_CHUNK = 1 << 20


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_identity(codec_dir: str | Path) -> str:
    """A short hash of the audio tokenizer's config and weight files: the cache namespace."""
    h = hashlib.sha256()
    for p in sorted(Path(codec_dir).iterdir()):
        if p.is_file() and (p.suffix in (".json", ".safetensors", ".bin")):
            h.update(p.name.encode())
            h.update(file_digest(p).encode())
    return h.hexdigest()[:16]


class CodeCache:
    """Codes (codebooks, frames) as int16 .npy files under `root/<tokenizer identity>/`."""

    def __init__(self, root: str | Path, identity: str) -> None:
        self.dir = Path(root) / identity
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the codes of the audio with content `digest` are kept (sharded by its first two characters)."""
        return self.dir / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        """The cached codes of `digest`, or None when that audio was not encoded yet."""
        p = self.path(digest)
        if not p.is_file():
            return None
        return np.load(p).astype(np.int64)

    def put(self, digest: str, codes: np.ndarray) -> None:
        """Store `codes` atomically, so a rank or job reading the cache never sees half a file."""
        p = self.path(digest)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = fsmode.temp_file(p.parent, ".tmp-", ".npy")  # the umask's mode: another job may share the cache
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, codes.astype(np.int16))
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def encode_waveform(codec: Any, waveform: np.ndarray) -> np.ndarray:
    """Codes (codebooks, frames) for a mono waveform at the codec's sample rate."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))[None, None].to(codec.device)
        codes = codec.encode(x).audio_codes[0]
    return codes.cpu().numpy()


def clip_key(clip: Clip, file_key: str) -> str:
    """The cache key of a clip: its file's content digest, or for a segment a digest of that and the segment."""
    if not clip.is_segment:
        return file_key
    return hashlib.sha256(f"{file_key}@{clip.offset!r}+{clip.duration!r}".encode()).hexdigest()


def fill_cache(
    clips: Iterable[Clip],
    cache: CodeCache,
    load_codec: Callable[[], Any],
    *,
    sample_rate: int,
    keys: dict[Clip, str],
    progress: bool = True,
    between: Callable[[], None] | None = None,
) -> tuple[int, list[tuple[Clip, str]]]:
    """Encode every distinct clip of `clips` whose codes are missing: (how many were encoded, failures).

    `keys` maps clip -> cache key (`clip_key`, computed once by the caller). The codec is loaded only when
    something is missing, so a warm cache costs no model load. A clip that fails to decode or to encode is
    a failure `(clip, reason)` and the rest are still encoded: one bad clip must not end a run, its samples
    are reported as bad. `between` runs before each clip and may raise to stop (`trainer.encode.prepare` stops
    there when another rank was signalled); what is encoded so far stays.
    """
    from trainer.data.audio import load_audio
    from trainer.errors import AudioError

    by_key: dict[str, Clip] = {}
    for clip in sorted(clips, key=str):  # the same bytes under several names are encoded once
        by_key.setdefault(keys[clip], clip)
    missing = [c for k, c in sorted(by_key.items()) if not cache.path(k).is_file()]
    if not missing:
        return 0, []
    codec = load_codec()
    counter = Counter(len(missing), "encoding audio", "clip") if progress else None
    failures: list[tuple[Clip, str]] = []
    for clip in missing:
        if between is not None:
            between()
        try:
            codes = encode_waveform(codec, load_audio(clip.path, sample_rate, clip.offset, clip.duration))
        except AudioError as err:
            failures.append((clip, err.reason))
        except Exception as err:
            if not encoding_fault(err):
                raise
            failures.append((clip, f"the audio tokenizer cannot encode it ({type(err).__name__}: {err})"))
        else:
            cache.put(keys[clip], codes)
        if counter is not None:
            counter.advance()
    if counter is not None:
        counter.close()
    return len(missing) - len(failures), failures


def encoding_fault(err: Exception) -> bool:
    """Whether `err`, raised while encoding one clip, is that clip's fault rather than the machine's.

    Running out of memory, or losing a peer, must still end the run (and be retried); anything else the
    codec raises on one clip (a clip its convolutions cannot take) makes that clip a bad sample.
    """
    from trainer.errors import lost_peer

    return not (isinstance(err, MemoryError) or "out of memory" in str(err).lower() or lost_peer(err))
