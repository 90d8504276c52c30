"""Read the three training-data formats into one conversation form, and find every bad sample.

Formats, told apart by the path:

- a `.json` file: a list of ChatML samples, the format of Boson AI's higgs-audio repository
  (`{"messages": [...], "start_index": n, "speaker": ..., "misc": {...}}`);
- a `.jsonl` file: one `{"audio", "text", "ref_audio"?, "ref_text"?, "scene"?, "speaker"?}` per line;
- a directory: `metadata.json` with a `samples` list, or else `x.wav`/`x.flac`/`x.ogg` + `x.txt` pairs
  (top level only).

All of them become `Conversation`s in the transformers chat format that Higgs Audio v2's chat template
renders: text in system, scene and user turns, audio only in assistant turns. Every problem is
collected as a `BadSample` naming its file and line or index, so a user fixes a dataset in one pass;
nothing is ever silently dropped or replaced here (the caller decides whether to skip or stop).
Audio is checked from file headers only (`audio_info`), so validating a large dataset stays fast.

This module picks the reader for a path and checks the audio of every sample; the readers live in
`trainer.chatml` (`.json`) and `trainer.manifests` (`.jsonl` and directories), the types in
`trainer.samples`. The rest of the package imports all of it from here.
"""

from __future__ import annotations

import os

from trainer.audio import AudioError, audio_info
from trainer.chatml import ROLES, read_chatml
from trainer.manifests import AUDIO_SUFFIXES, read_jsonl, read_metadata_dir, read_pairs_dir
from trainer.samples import BadSample, Candidate, Conversation, DataError

__all__ = [
    "AUDIO_SUFFIXES",
    "EXPECTED_INPUT",
    "ROLES",
    "BadSample",
    "Conversation",
    "DataError",
    "format_bad_samples",
    "load_conversations",
]

EXPECTED_INPUT = (
    "a ChatML .json list, a .jsonl manifest, or a directory (metadata.json or audio + .txt pairs)"
)


def load_conversations(
    path: str | os.PathLike[str], *, system_prompt: str, max_audio_seconds: float
) -> tuple[list[Conversation], list[BadSample]]:
    """Read a dataset in any supported format and check every sample and audio file.

    Args:
        path: A `.json` ChatML list, a `.jsonl` manifest or a dataset directory.
        system_prompt: System message for formats that carry none (and for ChatML samples without one).
        max_audio_seconds: Longest clip accepted, reference clips included.

    Returns:
        The good conversations in input order, and every bad sample in input order.

    Raises:
        DataError: The path is missing, of an unknown kind, not the expected JSON shape, or holds no samples.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: does not exist; expected {EXPECTED_INPUT}")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "metadata.json")):
            candidates = read_metadata_dir(path, system_prompt)
        else:
            candidates = read_pairs_dir(path, system_prompt)
    elif path.endswith(".jsonl"):
        candidates = read_jsonl(path, system_prompt)
    elif path.endswith(".json"):
        candidates = read_chatml(path, system_prompt)
    else:
        raise DataError(f"{path}: unknown data format; expected {EXPECTED_INPUT}")
    if not candidates:
        raise DataError(f"{path}: holds no samples; expected {EXPECTED_INPUT}")
    return _check_audio(candidates, max_audio_seconds)


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
    candidates: list[Candidate], max_seconds: float
) -> tuple[list[Conversation], list[BadSample]]:
    """Check each candidate's audio headers (each file once) and split good from bad."""
    cache: dict[str, str | None] = {}
    good: list[Conversation] = []
    bad: list[BadSample] = []
    for cand in candidates:
        problems = list(cand.problems)
        for path in dict.fromkeys(cand.audio):
            if path not in cache:
                cache[path] = _audio_problem(path, max_seconds)
            if cache[path]:
                problems.append(cache[path])
        if problems or cand.conversation is None:
            bad.append(BadSample(cand.source, "; ".join(problems) or "unusable sample"))
        else:
            good.append(cand.conversation)
    return good, bad


def _audio_problem(path: str, max_seconds: float) -> str | None:
    try:
        duration, _ = audio_info(path)
    except AudioError as err:
        if err.reason == "file not found":
            return f"audio file not found: {path}"
        return f"audio file {path}: {err.reason}"
    if duration > max_seconds:
        # One decimal unless it would print as the limit itself ("30.0 s, over 30").
        shown = f"{duration:.1f}" if round(duration, 1) > max_seconds else f"{duration:.3f}"
        return f"clip is {shown} s, over --max_audio_seconds {max_seconds:g}: {path}"
    return None
