"""Readers of the clip-and-transcript formats.

A `.jsonl` manifest (format 3), and a directory (format 2) with a `metadata.json` or else `x.wav`/`x.flac`/`x.ogg` +
`x.txt` pairs at its top level.

Each of their samples is one transcript and one clip, with an optional reference pair (voice cloning)
and scene, so one builder (`pair_candidate`) turns all three into conversations; only where the fields
come from differs. `trainer.data.load` picks the reader from the path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from trainer.data.fields import get_str, json_type, read_json, resolve, text_message
from trainer.data.samples import Candidate, Conversation
from trainer.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


# --- what the three formats share ----------------------------------------------------------------


def read_transcript(path: str, problems: list[str], what: str = "transcript") -> str | None:
    """The stripped text of a transcript file, or None with the problem added to `problems`."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read().strip()
    except FileNotFoundError:
        problems.append(f"{what} file not found: {path}")
        return None
    except UnicodeDecodeError:
        problems.append(f"{what} file is not UTF-8 text: {path}")
        return None
    except OSError as err:
        problems.append(f"{what} file unreadable ({err.strerror}): {path}")
        return None
    if not text:
        problems.append(f"empty {what}: {path}")
        return None
    return text


def _get_path(
    record: dict, key: str, base: str, problems: list[str], *, required: bool = False
) -> str | None:
    """A file field resolved against the dataset's directory; an empty string is reported, not ignored."""
    value = get_str(record, key, problems, required=required)
    if value is not None and not value.strip():
        problems.append(f"field '{key}' is empty")
        return None
    return resolve(base, value) if value is not None else None


def pair_candidate(
    source: str,
    problems: list[str],
    sample_id: str,
    system_prompt: str,
    text: str | None,
    audio: str | None,
    ref: tuple[str, str] | None = None,
    scene: str | None = None,
    speaker: str | None = None,
) -> Candidate:
    """Formats 2 and 3: system [+ scene] [+ user ref text + assistant ref audio] + user text + audio.

    `ref` is (reference text, reference audio). Without problems, `text` and `audio` are set.
    """
    items = [{"type": "audio", "path": p} for p in (ref[1] if ref else None, audio) if p is not None]
    if problems or text is None or audio is None:
        return Candidate(source, problems, items)
    messages = pair_messages(system_prompt, text, audio, ref, scene)
    conversation = Conversation(sample_id, source, messages, len(messages) - 1, speaker)
    return Candidate(source, problems, items, conversation)


def pair_messages(
    system_prompt: str, text: str, audio: str, ref: tuple[str, str] | None = None, scene: str | None = None
) -> list[dict]:
    """The conversation of one transcript and clip.

    System [+ scene] [+ user ref text + assistant ref audio] + user text + assistant audio. Training lays out its
    samples with it, and `synthesize` its prompts, so that a model is prompted exactly as it was trained.
    """
    messages = [text_message("system", system_prompt)]
    if scene and scene.strip():
        messages.append(text_message("scene", scene.strip()))
    for turn_text, path in ([ref] if ref else []) + [(text, audio)]:
        audio_item = {"type": "audio", "path": path}
        messages += [text_message("user", turn_text), {"role": "assistant", "content": [audio_item]}]
    return messages


def _reference(
    ref_text: str | None, ref_audio: str | None, keys: tuple[str, str], problems: list[str]
) -> tuple[str, str] | None:
    """(text, audio) of a reference, or None.

    A reference clip needs its transcript: the chat format puts a user turn with text before every assistant audio turn,
    and an empty one would teach speech without text.
    """
    text_key, audio_key = keys
    if ref_text is not None and not ref_text.strip():
        problems.append(f"empty reference transcript ({text_key})")
    if ref_audio is not None and ref_text is None:
        problems.append(f"{audio_key} given without {text_key}")
    if ref_text is not None and ref_audio is None:
        problems.append(f"{text_key} given without {audio_key}")
    return (ref_text.strip(), ref_audio) if ref_text and ref_audio else None


# --- format 3: JSONL manifest --------------------------------------------------------------------


def read_jsonl(path: str, system_prompt: str) -> Iterator[Candidate]:
    """One candidate per non-blank line, in file order, read a line at a time: no line is kept once read."""
    base = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            source = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                if not line.strip():
                    continue
                record = json.loads(line)
            except UnicodeDecodeError as err:
                yield Candidate(source, [f"line is not UTF-8 text: {err}"])
            except json.JSONDecodeError as err:
                yield Candidate(source, [f"line is not valid JSON: {err}"])
            else:
                yield _jsonl_candidate(record, base, f"{stem}-{lineno}", source, system_prompt)


def _jsonl_candidate(record: Any, base: str, sample_id: str, source: str, system_prompt: str) -> Candidate:
    if not isinstance(record, dict):
        return Candidate(source, [f"line must be a JSON object, got {json_type(record)}"])
    problems: list[str] = []
    audio = _get_path(record, "audio", base, problems, required=True)
    text = get_str(record, "text", problems, required=True)
    if text is not None and not text.strip():
        problems.append("empty transcript")
    ref_text = get_str(record, "ref_text", problems)
    ref = _reference(
        ref_text, _get_path(record, "ref_audio", base, problems), ("ref_text", "ref_audio"), problems
    )
    scene = get_str(record, "scene", problems)
    speaker = get_str(record, "speaker", problems, name=True)
    text = text.strip() if text else None
    return pair_candidate(source, problems, sample_id, system_prompt, text, audio, ref, scene, speaker)


# --- format 2: a directory -----------------------------------------------------------------------


def read_metadata_dir(directory: str, system_prompt: str) -> list[Candidate]:
    """One candidate per entry of `metadata.json`'s `samples` list; `DataError` when there is no such list."""
    meta_path = os.path.join(directory, "metadata.json")
    meta = read_json(meta_path)
    samples = meta.get("samples") if isinstance(meta, dict) else None
    if not isinstance(samples, list):
        raise DataError(f"{meta_path}: expected an object with a 'samples' list of sample objects")
    base = os.path.abspath(directory)
    seen: dict[str, str] = {}
    candidates = []
    for i, sample in enumerate(samples):
        source = f"{meta_path} samples[{i}]"
        if not isinstance(sample, dict):
            candidates.append(Candidate(source, [f"sample must be an object, got {json_type(sample)}"]))
            continue
        problems: list[str] = []
        sample_id = get_str(sample, "id", problems, required=True, name=True)
        if sample_id is not None and sample_id in seen:
            problems.append(f"duplicate id '{sample_id}' (also {seen[sample_id]})")
        elif sample_id is not None:
            seen[sample_id] = source
        candidates.append(_metadata_candidate(sample, base, sample_id or "", source, system_prompt, problems))
    return candidates


def _metadata_candidate(
    sample: dict, base: str, sample_id: str, source: str, system_prompt: str, problems: list[str]
) -> Candidate:
    audio = _get_path(sample, "audio_file", base, problems, required=True)
    transcript_file = _get_path(sample, "transcript_file", base, problems, required=True)
    text = read_transcript(transcript_file, problems) if transcript_file else None
    ref_text = get_str(sample, "ref_transcript", problems)
    ref_file = _get_path(sample, "ref_transcript_file", base, problems)
    if ref_text is not None and ref_file is not None:
        problems.append("give ref_transcript or ref_transcript_file, not both")
    elif ref_file is not None:
        # An unreadable file is reported here; the placeholder keeps _reference from calling it missing.
        ref_text = read_transcript(ref_file, problems, "reference transcript") or "-"
    ref_audio = _get_path(sample, "ref_audio_file", base, problems)
    ref = _reference(ref_text, ref_audio, ("ref_transcript", "ref_audio_file"), problems)
    scene = get_str(sample, "scene", problems)
    speaker = get_str(sample, "speaker_id", problems, name=True)
    return pair_candidate(source, problems, sample_id, system_prompt, text, audio, ref, scene, speaker)


def read_pairs_dir(directory: str, system_prompt: str) -> list[Candidate]:
    """One candidate per file stem at the directory's top level, sorted by stem."""
    base = os.path.abspath(directory)
    audio_by_stem: dict[str, list[str]] = {}
    text_by_stem: dict[str, str] = {}
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or not os.path.isfile(os.path.join(directory, name)):
            continue
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in AUDIO_SUFFIXES:
            audio_by_stem.setdefault(stem, []).append(name)
        elif suffix.lower() == ".txt":
            text_by_stem[stem] = name
    candidates = []
    for stem in sorted(audio_by_stem.keys() | text_by_stem.keys()):
        audio_names, text_name = audio_by_stem.get(stem, []), text_by_stem.get(stem)
        source = os.path.join(directory, audio_names[0] if audio_names else str(text_name))
        problems: list[str] = []
        if not audio_names:
            problems.append(f"transcript has no audio file (expected {stem}.wav or {stem}.flac next to it)")
        elif len(audio_names) > 1:
            problems.append(f"several audio files for one transcript: {', '.join(audio_names)}")
        if text_name is None:
            problems.append(f"audio file has no transcript (expected {stem}.txt next to it)")
        text = read_transcript(os.path.join(base, text_name), problems) if text_name else None
        audio = os.path.join(base, audio_names[0]) if len(audio_names) == 1 else None
        candidates.append(pair_candidate(source, problems, stem, system_prompt, text, audio))
    return candidates
