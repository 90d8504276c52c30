"""Read every training-data format into one conversation form, and find every bad sample.

This module checks the audio of every sample and pairs reference clips where a corpus names speakers;
`trainer.data.formats` picks the reader for a path (`trainer.data.chatml`, `trainer.data.pairs` and one module
per corpus layout), the types are in `trainer.data.samples`. The rest of the package imports all of it from here.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

from trainer.config.options import MIN_AUDIO_SECONDS
from trainer.data.audio import audio_info
from trainer.data.chatml import ROLES
from trainer.data.formats import SPEAKER_CORPORA, ReadOptions, read_candidates
from trainer.data.pairs import AUDIO_SUFFIXES
from trainer.data.references import pair_references
from trainer.data.samples import BadSample, Candidate, Clip, Conversation
from trainer.errors import AudioError, DataError

__all__ = [
    "AUDIO_SUFFIXES",
    "EXPECTED_INPUT",
    "ROLES",
    "BadSample",
    "Clip",
    "Conversation",
    "DataError",
    "ReadOptions",
    "References",
    "format_bad_samples",
    "load_conversations",
]

# How far a ChatML `duration` may fall short of the file's length and still mean the whole file (the seed
# scripts round it to hundredths of a second).
DURATION_TOLERANCE_SECONDS = 0.05
CHECK_BATCH = 10_000  # candidates read before their audio is checked (`_check_audio`)

EXPECTED_INPUT = (
    "a ChatML .json list, a .jsonl manifest, a directory (metadata.json or audio + .txt pairs), or a corpus "
    "layout of docs/bring-your-data.md"
)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class References:
    """Reference clips paired with the targets of corpora that name speakers (trainer.data.references)."""

    count: int = 1
    max_seconds: float = 20.0
    seed: int = 0


DEFAULT_READ, DEFAULT_REFERENCES = ReadOptions(), References()


def load_conversations(
    path: str | os.PathLike[str],
    *,
    system_prompt: str,
    max_audio_seconds: float,
    min_audio_seconds: float = MIN_AUDIO_SECONDS,
    read: ReadOptions = DEFAULT_READ,
    references: References = DEFAULT_REFERENCES,
) -> tuple[list[Conversation], list[BadSample]]:
    """Read a dataset in any supported format and check every sample and audio file.

    Formats, told apart by the path:

    - a `.json` file: a list of ChatML samples, the format of Boson AI's higgs-audio repository
      (`{"messages": [...], "start_index": n, "speaker": ..., "misc": {...}}`);
    - a `.jsonl` file: one `{"audio", "text", "ref_audio"?, "ref_text"?, "scene"?, "speaker"?}` per line;
    - a directory: `metadata.json` with a `samples` list, or else `x.wav`/`x.flac`/`x.ogg` + `x.txt` pairs
      (top level only);
    - the corpus layouts LJSpeech, LibriTTS, Common Voice and Hugging Face datasets (`trainer.data.formats`),
      whose targets get reference clips of the same speaker where the corpus names speakers.

    All of them become `Conversation`s in the transformers chat format that Higgs Audio v2's chat template
    renders: text in system, scene and user turns, audio only in assistant turns. Every problem is
    collected as a `BadSample` naming its file and line or index, so a user fixes a dataset in one pass;
    nothing is ever silently dropped or replaced here (the caller decides whether to skip or stop).

    Args:
        path (`str | os.PathLike[str]`):
            A `.json` ChatML list, a `.jsonl` manifest or a dataset directory.
        system_prompt (`str`):
            System message for formats that carry none (and for ChatML samples without one).
        max_audio_seconds (`float`):
            Longest clip accepted, reference clips included.
        min_audio_seconds (`float`, *optional*):
            Shortest clip accepted: the audio tokenizer cannot encode a few milliseconds.
        read (`ReadOptions`, *optional*):
            The format (auto-detected by default) and a Hugging Face dataset's columns.
        references (`References`, *optional*):
            How many reference clips of the same speaker, how long at most, and the seed of the pick.

    Returns:
        The good conversations in input order, and every bad sample in input order.

    Raises:
        DataError: The path is missing, of an unknown kind, not the expected JSON shape, or holds no samples.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: does not exist; expected {EXPECTED_INPUT}")
    with _no_cyclic_gc():
        fmt, candidates = read_candidates(path, system_prompt, read)
        files: dict[str, tuple[float, str | None]] = {}
        good, bad = _check_audio(candidates, (min_audio_seconds, max_audio_seconds), files)
        if not good and not bad:  # only known once a streamed file is read through
            raise DataError(f"{path}: holds no samples; expected {EXPECTED_INPUT}")
        if fmt in SPEAKER_CORPORA:
            seconds = {p: s for p, (s, problem) in files.items() if problem is None}
            good, report = pair_references(good, seconds, count=references.count,
                                           max_seconds=references.max_seconds, seed=references.seed)
            log.info("%s: %s", path, report)
        return good, bad


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a dataset is read.

    Reading allocates millions of small objects and frees almost none, so every full collection walks the
    whole parsed file again for nothing: a fifth of the read of a 50,000-sample file (bench/bench_data_read.py).
    Reference counting still frees everything; collection resumes as it was.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def format_bad_samples(bad: list[BadSample], limit: int = 50) -> str:
    """One report of the bad samples, `source: reason` per line, with a count (the first `limit` shown)."""
    if not bad:
        return "no bad samples"
    lines = [f"{len(bad)} bad sample{'' if len(bad) == 1 else 's'}:"]
    lines += [f"  {b}" for b in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)


# --- audio checks --------------------------------------------------------------------------------


def _check_audio(
    candidates: Iterable[Candidate], limits: tuple[float, float], files: dict[str, tuple[float, str | None]]
) -> tuple[list[Conversation], list[BadSample]]:
    """Check each candidate's audio headers (each file once) and split good from bad.

    Audio is checked from file headers only (`audio_info`), so validating a large dataset stays fast.

    An item whose `offset`/`duration` describe the whole file loses them here, so that it is encoded (and
    cached) as the file it is; a real segment keeps them and is cut from the file when it is encoded.

    A streamed file's candidates are taken `CHECK_BATCH` at a time, read and mapped, then checked: checking
    each as it is read did the same work 15-20% slower (CPU time, 50,000 seed-layout samples), the parser
    and the audio header reads taking turns per sample. A batch holds only candidates, which are kept anyway.
    """
    good: list[Conversation] = []
    bad: list[BadSample] = []
    iterator = iter(candidates)
    while batch := list(islice(iterator, CHECK_BATCH)):
        good_batch, bad_batch = _check_batch(batch, limits, files)
        good += good_batch
        bad += bad_batch
    return good, bad


def _check_batch(
    candidates: list[Candidate], limits: tuple[float, float], files: dict[str, tuple[float, str | None]]
) -> tuple[list[Conversation], list[BadSample]]:
    good: list[Conversation] = []
    bad: list[BadSample] = []
    for cand in candidates:
        problems = list(cand.problems)
        for item in cand.audio:
            path = item["path"]
            if path not in files:
                files[path] = _file_seconds(path)
            seconds, problem = files[path]
            problem = problem or _segment_problem(item, seconds, limits)
            if problem and problem not in problems:
                problems.append(problem)
        if problems or cand.conversation is None:
            bad.append(BadSample(cand.source, "; ".join(problems) or "unusable sample"))
        else:
            good.append(cand.conversation)
    return good, bad


def _file_seconds(path: str) -> tuple[float, str | None]:
    """(duration, None), or (0, the problem) for a file whose header cannot be read."""
    try:
        return audio_info(path)[0], None
    except AudioError as err:
        if err.reason == "file not found":
            return 0.0, f"audio file not found: {path}"
        return 0.0, f"audio file {path}: {err.reason}"


def _segment_problem(item: dict, file_seconds: float, limits: tuple[float, float]) -> str | None:
    """What is wrong with an audio item's clip, or None; drops `offset`/`duration` that mean the whole file."""
    offset, duration = item.get("offset", 0.0), item.get("duration")
    if offset >= file_seconds:
        return f"offset {offset:g} s is at or past the end of {item['path']} ({file_seconds:.3f} s)"
    if duration is not None and offset + duration > file_seconds + DURATION_TOLERANCE_SECONDS:
        return (f"offset {offset:g} s + duration {duration:g} s ends past the end of {item['path']} "
                f"({file_seconds:.3f} s)")
    if offset == 0 and (duration is None or duration >= file_seconds - DURATION_TOLERANCE_SECONDS):
        item.pop("offset", None)  # the seed scripts' full-length `duration`: metadata, not a segment
        item.pop("duration", None)
    seconds = min(file_seconds - offset, duration if "duration" in item else file_seconds)
    clip = Clip.of(item)
    low, high = limits
    if seconds > high:
        # One decimal unless it would print as the limit itself ("30.0 s, over 30").
        shown = f"{seconds:.1f}" if round(seconds, 1) > high else f"{seconds:.3f}"
        return f"clip is {shown} s, over --max_audio_seconds {high:g}: {clip}"
    if seconds < low:
        return (f"clip is {seconds:.3f} s, under --min_audio_seconds {low:g} (too short for the audio "
                f"tokenizer to encode): {clip}")
    return None
