"""Reader of format 1: a `.json` list of ChatML samples, in either of the two layouts people have.

`trainer.data.load` picks this reader for a path ending in `.json`; `read_chatml` says what the two layouts
are, and `native_turns` maps the seed scripts' one onto the native one the chat template renders.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

from trainer.data.fields import get_str, json_type, read_json, resolve, text_message
from trainer.data.json_stream import iter_json_list, starts_a_list
from trainer.data.samples import Candidate, Conversation
from trainer.errors import DataError

ROLES = ("system", "scene", "user", "assistant")


def read_chatml(path: str, system_prompt: str) -> Iterator[Candidate]:
    """One candidate per list item, in file order; `DataError` when the file is not such a list.

    A sample is `{"messages": [...], "start_index": n, "speaker": ..., "misc": {...}}`. Two layouts of its
    messages are read as they are:

    - the native one (Boson AI's higgs-audio repository, and what the model's chat template renders): text in
      system, scene and user turns, audio alone in assistant turns;
    - the seed scripts' one (train-higgs-audio): the reference clip inside the user turn, between its
      transcript and an instruction, and the assistant turn holding the target's transcript before its audio.

    Every way a sample can still break the chat template is recorded as a problem of that sample. The list is
    read as a stream (`trainer.data.json_stream`), an item at a time, so the file is never held whole; a
    file that is not a list is read whole to say what it is instead.
    """
    base = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    items = iter_json_list(path) if starts_a_list(path) else _not_a_list(path)
    for i, item in enumerate(items):
        yield _chatml_candidate(item, base, f"{stem}-{i}", f"{path}[{i}]", system_prompt)


def _not_a_list(path: str) -> list:
    """Today's error for a file whose top level is not a list: invalid JSON, a metadata.json, or another type."""
    items = read_json(path)
    if isinstance(items, dict) and "samples" in items:
        raise DataError(f"{path}: is a dataset directory's metadata.json; pass its directory instead")
    if not isinstance(items, list):
        raise DataError(
            f"{path}: expected a JSON list of ChatML samples "
            f'({{"messages": [...], "start_index": n}}), got {json_type(items)}'
        )
    return items  # a list after all (starts_a_list found no '[' where json does): read it whole


def _chatml_candidate(item: Any, base: str, sample_id: str, source: str, system_prompt: str) -> Candidate:
    if not isinstance(item, dict):
        return Candidate(source, [f"sample must be an object, got {json_type(item)}"])
    problems: list[str] = []
    raw_messages = item.get("messages")
    if raw_messages is None:
        return Candidate(source, ["missing field 'messages'"])
    if not isinstance(raw_messages, list) or not raw_messages:
        return Candidate(
            source, [f"field 'messages' must be a non-empty list, got {json_type(raw_messages)}"]
        )
    labels = [f"messages[{i}]" for i in range(len(raw_messages))]
    messages = [_chatml_message(raw, label, base, problems) for raw, label in zip(raw_messages, labels, strict=True)]
    audio = [c for m in messages if m for c in m["content"] if c["type"] == "audio"]

    misc = item.get("misc")
    speaker = get_str(item, "speaker", problems, name=True)
    if speaker is None and isinstance(misc, dict):
        speaker = get_str(misc, "speaker", problems, name=True)  # where the original loader also looks
    start = _start_index(item, raw_messages, problems)
    if problems or start is None or None in messages:
        return Candidate(source, problems, audio)
    native = native_turns(messages, labels, start, problems)  # type: ignore[arg-type]
    if problems or native is None:
        return Candidate(source, problems, audio)
    turns, new_start, references = native
    if turns[0]["role"] != "system":
        turns.insert(0, text_message("system", system_prompt))
        new_start += 1
        references = {i + 1 for i in references}
    conversation = Conversation(sample_id, source, turns, new_start, speaker, frozenset(references))
    if not any(conversation.target_flags()):
        problems.append(f"no assistant audio at or after start_index {start}, so nothing to train on")
        return Candidate(source, problems, audio)
    return Candidate(source, problems, audio, conversation)


def native_turns(
    messages: list[dict], labels: list[str], start: int, problems: list[str]
) -> tuple[list[dict], int, set[int]] | None:
    """Map normalised messages onto the layout the chat template renders and the model is prompted with.

    The one place that maps the seed scripts' layout onto the native one (`read_chatml`; the README's
    "Input formats" says how).

    Returns (messages, start index, reference turns), or None with the reasons added to `problems`.
    The mapping follows the original model's voice-cloning prompt (system, user: reference transcript,
    assistant: reference audio, user: text to speak, assistant: its audio):

    - audio in a user turn is a reference: the text before it in that turn is its transcript, and the
      pair becomes a user turn and an assistant turn that is context, never a target;
    - text after the last audio of a user turn is that turn's text (an instruction, or the text to speak);
    - text before an audio item in an assistant turn is the transcript of that audio: it becomes the user
      turn before it (replacing the user's own text, so "Please generate speech ...: <text>" prompts as
      "<text>"), and never a text target the model would learn to emit before the audio;
    - `start_index` counts in the original messages: assistant audio from a message before it is context.

    The native layout maps onto itself unchanged.
    """
    out: list[dict] = []
    references: set[int] = set()
    new_start: int | None = None
    for index, (message, label) in enumerate(zip(messages, labels, strict=True)):
        if index == start:
            new_start = len(out)
        role, content, where = message["role"], message["content"], message["where"]
        if role in ("system", "scene"):
            if any(c["type"] == "audio" for c in content):
                problems.append(f"{label}: audio in a {role} message; put reference audio in a user or "
                                "assistant turn")
            else:
                out.append({"role": role, "content": content})
        elif role == "user" and not any(c["type"] == "audio" for c in content):
            if not _joined([c["text"] for c in content]):
                problems.append(f"{label}: empty transcript")
            out.append({"role": role, "content": content})
        elif role == "user":
            clips, rest = _clips_with_transcripts(content, where)
            for transcript, item, at in clips:
                if not transcript:
                    problems.append(f"{at}: reference audio with no transcript before it in the user message; "
                                    "the voice-cloning prompt needs the reference clip's transcript first")
                    continue
                out += [text_message("user", transcript), {"role": "assistant", "content": [item]}]
                references.add(len(out) - 1)
            if rest:
                out.append(text_message("user", rest))
        else:  # assistant
            if not any(c["type"] == "audio" for c in content):
                problems.append(f"{label}: assistant message holds text but no audio; Higgs Audio v2 assistant turns "
                                "hold audio, and the text they speak belongs in the user turn before them")
                continue
            clips, rest = _clips_with_transcripts(content, where)
            for transcript, item, at in clips:
                if transcript and out and out[-1]["role"] == "user":
                    out[-1] = text_message("user", transcript)
                elif transcript:
                    out.append(text_message("user", transcript))
                elif not out or out[-1]["role"] != "user":
                    problems.append(f"{at}: assistant audio with no transcript: give its text as a text item "
                                    "before it, or as the user turn before this message")
                    continue
                out.append({"role": "assistant", "content": [item]})
            if rest:
                problems.append(f"{label}: text after the last audio of an assistant message; the text an audio "
                                "clip speaks goes before it")
    if problems:
        return None
    return out, len(out) if new_start is None else new_start, references


def _clips_with_transcripts(content: list[dict], where: list[str]) -> tuple[list[tuple[str, dict, str]], str]:
    """Split a message's items at its audio.

    (text before it, the audio item, where it is) per clip, and the text after the last clip. Both layouts put a clip's
    transcript right before the clip.
    """
    clips, text = [], []
    for item, at in zip(content, where, strict=True):
        if item["type"] == "text":
            text.append(item["text"])
        else:
            clips.append((_joined(text), item, at))
            text = []
    return clips, _joined(text)


def _joined(parts: list[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


def _start_index(item: dict, raw_messages: list, problems: list[str]) -> int | None:
    """start_index as given, or the last assistant message when it is missing (the usual single target)."""
    start = item.get("start_index")
    if start is None:
        roles = [m.get("role") if isinstance(m, dict) else None for m in raw_messages]
        if "assistant" not in roles:
            problems.append("no assistant message, so nothing to train on")
            return None
        return len(roles) - 1 - roles[::-1].index("assistant")
    if not isinstance(start, int) or isinstance(start, bool):
        problems.append(f"field 'start_index' must be an integer, got {json_type(start)}")
        return None
    if not 0 <= start < len(raw_messages):
        problems.append(f"start_index {start} is out of range for {len(raw_messages)} messages")
        return None
    return start


def _chatml_message(raw: Any, label: str, base: str, problems: list[str]) -> dict | None:
    """One message in the normal form, or None when it is unusable (its problems are recorded)."""
    if not isinstance(raw, dict):
        problems.append(f"{label}: must be an object with 'role' and 'content', got {json_type(raw)}")
        return None
    role = raw.get("role")
    if role is None:
        problems.append(f"{label}: missing field 'role'")
    elif role not in ROLES:
        problems.append(f"{label}: unknown role {role!r} (expected system, scene, user or assistant)")
    if "content" not in raw:
        problems.append(f"{label}: missing field 'content'")
        return None
    read = _chatml_content(raw["content"], label, base, problems)
    if read is None:
        return None
    content, where = read
    if role in ROLES and not content:
        problems.append(f"{label}: {role} message has no content")
    return {"role": role, "content": content, "where": where}


def _chatml_content(value: Any, label: str, base: str, problems: list[str]) -> tuple[list[dict], list[str]] | None:
    """The content items in the normal form, and where each one is in the file (for messages)."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}], [f"{label}.content"]
    if isinstance(value, dict):
        items, labels = [value], [f"{label}.content"]
    elif isinstance(value, list):
        items, labels = value, [f"{label}.content[{j}]" for j in range(len(value))]
    else:
        problems.append(f"{label}: content must be a string, an object or a list, got {json_type(value)}")
        return None
    read = [(_content_item(item, where, base, problems), where) for item, where in zip(items, labels, strict=True)]
    return [c for c, _ in read if c is not None], [where for c, where in read if c is not None]


def _content_item(item: Any, where: str, base: str, problems: list[str]) -> dict | None:
    """One content item in the normal form, or None (its problem recorded)."""
    if isinstance(item, str):  # the original loader accepts bare strings in a content list
        return {"type": "text", "text": item}
    if not isinstance(item, dict):
        problems.append(f"{where}: must be a string or an object, got {json_type(item)}")
    elif item.get("type") == "text":
        if isinstance(item.get("text"), str):
            return {"type": "text", "text": item["text"]}
        problems.append(f"{where}: text item needs a string 'text', got {json_type(item.get('text'))}")
    elif item.get("type") == "audio":
        return _audio_item(item, where, base, problems)
    elif "type" not in item:
        problems.append(f"{where}: missing field 'type'")
    else:
        problems.append(f"{where}: unknown content type {item['type']!r} (expected text or audio)")
    return None


def _audio_item(item: dict, where: str, base: str, problems: list[str]) -> dict | None:
    """`{"type": "audio", "path", "offset"?, "duration"?}`, the file resolved next to the JSON file.

    `offset` and `duration` are kept as given; `trainer.data.load` reads the file's header and drops them where
    they describe the whole file (the seed scripts write every clip's full length as its `duration`).
    """
    path = _audio_item_path(item, where, base, problems)
    segment = {key: _seconds(item, key, where, problems) for key in ("offset", "duration")}
    if path is None or any(v is False for v in segment.values()):
        return None
    if segment["duration"] == 0:
        problems.append(f"{where}: 'duration' must be above 0 seconds, got 0")
        return None
    return {"type": "audio", "path": path} | {k: v for k, v in segment.items() if v}


def _seconds(item: dict, key: str, where: str, problems: list[str]) -> float | bool | None:
    """A non-negative number of seconds, None when absent or null, False (recorded) when invalid."""
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        problems.append(f"{where}: '{key}' must be a number of seconds >= 0 or null, got {value!r}")
        return False
    return float(value)


def _audio_item_path(item: dict, where: str, base: str, problems: list[str]) -> str | None:
    """The local file of an audio item (`audio_url`, `path` or `url`), resolved next to the JSON file."""
    for key in ("audio_url", "path", "url"):
        value = item.get(key)
        if value is None or value == "":  # the original format leaves audio_url empty beside raw_audio
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}: '{key}' must be a file path, got {json_type(value)}")
            return None
        if value.startswith("file://"):
            value = value.removeprefix("file://")
        elif "://" in value:
            problems.append(f"{where}: {key} {value!r} is a URL; only local files are supported")
            return None
        return resolve(base, value)
    if item.get("raw_audio"):
        problems.append(f"{where}: inline raw_audio is not supported; save it to a file and give its path")
    else:
        problems.append(f"{where}: audio item has no 'audio_url', 'path' or 'url'")
    return None
