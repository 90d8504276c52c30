"""Reader of format 1: a `.json` list of ChatML samples, the format of Boson AI's higgs-audio repository.

A sample is `{"messages": [...], "start_index": n, "speaker": ..., "misc": {...}}`. Its messages are
normalised to the transformers chat format (content always a list of text and audio items, audio paths
resolved next to the JSON file), and every way it can break Higgs Audio v2's chat template is recorded
as a problem of that sample. The ChatML format is the richest of the three and needs checks the other
formats do not, hence a module of its own; `trainer.data` picks it for a path ending in `.json`.
"""

from __future__ import annotations

import os
from typing import Any

from trainer.records import get_str, json_type, read_json, resolve, text_message
from trainer.samples import Candidate, Conversation, DataError

ROLES = ("system", "scene", "user", "assistant")


def read_chatml(path: str, system_prompt: str) -> list[Candidate]:
    """One candidate per list item, in file order; `DataError` when the file is not such a list."""
    items = read_json(path)
    if isinstance(items, dict) and "samples" in items:
        raise DataError(f"{path}: is a dataset directory's metadata.json; pass its directory instead")
    if not isinstance(items, list):
        raise DataError(
            f"{path}: expected a JSON list of ChatML samples "
            f'({{"messages": [...], "start_index": n}}), got {json_type(items)}'
        )
    base = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    return [
        _chatml_candidate(item, base, f"{stem}-{i}", f"{path}[{i}]", system_prompt)
        for i, item in enumerate(items)
    ]


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
    messages = [_chatml_message(raw, f"messages[{i}]", base, problems) for i, raw in enumerate(raw_messages)]
    audio = [c["path"] for m in messages if m for c in m["content"] if c["type"] == "audio"]

    misc = item.get("misc")
    speaker = get_str(item, "speaker", problems, name=True)
    if speaker is None and isinstance(misc, dict):
        speaker = get_str(misc, "speaker", problems, name=True)  # where the original loader also looks
    start = _start_index(item, raw_messages, problems)
    if start is not None and not any(
        m and m["role"] == "assistant" and any(c["type"] == "audio" for c in m["content"])
        for m in messages[start:]
    ):
        problems.append(f"no assistant audio at or after start_index {start}, so nothing to train on")
    if problems or start is None:
        return Candidate(source, problems, audio)
    ready = [m for m in messages if m is not None]
    if ready[0]["role"] != "system":
        ready.insert(0, text_message("system", system_prompt))
        start += 1
    return Candidate(source, problems, audio, Conversation(sample_id, source, ready, start, speaker))


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
    content = _chatml_content(raw["content"], label, base, problems)
    if content is None:
        return None
    kinds = {c["type"] for c in content}
    if role not in ROLES:
        pass  # already reported; the message is kept so that its audio is still checked
    elif not content:
        problems.append(f"{label}: {role} message has no content")
    elif role == "assistant" and "text" in kinds:
        problems.append(
            f"{label}: assistant message holds text; Higgs Audio v2 assistant turns hold audio only"
        )
    elif role != "assistant" and "audio" in kinds:
        problems.append(
            f"{label}: audio in a {role} message; the Higgs Audio v2 chat format renders audio "
            "only in assistant turns"
        )
    elif role == "user" and not "".join(c["text"] for c in content).strip():
        problems.append(f"{label}: empty transcript")
    return {"role": role, "content": content}


def _chatml_content(value: Any, label: str, base: str, problems: list[str]) -> list[dict] | None:
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if isinstance(value, dict):
        items, labels = [value], [f"{label}.content"]
    elif isinstance(value, list):
        items, labels = value, [f"{label}.content[{j}]" for j in range(len(value))]
    else:
        problems.append(f"{label}: content must be a string, an object or a list, got {json_type(value)}")
        return None
    content = []
    for item, where in zip(items, labels, strict=True):
        if isinstance(item, str):  # the original loader accepts bare strings in a content list
            content.append({"type": "text", "text": item})
        elif not isinstance(item, dict):
            problems.append(f"{where}: must be a string or an object, got {json_type(item)}")
        elif item.get("type") == "text":
            if isinstance(item.get("text"), str):
                content.append({"type": "text", "text": item["text"]})
            else:
                problems.append(
                    f"{where}: text item needs a string 'text', got {json_type(item.get('text'))}"
                )
        elif item.get("type") == "audio":
            path = _audio_item_path(item, where, base, problems)
            if path is not None:
                content.append({"type": "audio", "path": path})
        elif "type" not in item:
            problems.append(f"{where}: missing field 'type'")
        else:
            problems.append(f"{where}: unknown content type {item['type']!r} (expected text or audio)")
    return content


def _audio_item_path(item: dict, where: str, base: str, problems: list[str]) -> str | None:
    """The local file of an audio item (`audio_url`, `path` or `url`), resolved next to the JSON file."""
    if item.get("offset") not in (None, 0) or item.get("duration") is not None:
        # Training on the whole file while the transcript covers a segment would be silently wrong.
        problems.append(
            f"{where}: audio segments (offset/duration) are not supported; cut the clip to a file"
        )
        return None
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
