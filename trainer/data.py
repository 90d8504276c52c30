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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from trainer.audio import AudioError, audio_info

ROLES = ("system", "scene", "user", "assistant")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
EXPECTED_INPUT = (
    "a ChatML .json list, a .jsonl manifest, or a directory (metadata.json or audio + .txt pairs)"
)


@dataclass
class Conversation:
    """One training sample in the transformers chat format.

    Args:
        id: Stable and unique within its dataset (the sample's own id, or `<file stem>-<index>`).
        source: Where it came from, for messages: `data/train.json[3]`, `data/m.jsonl:12`, ...
        messages: `{"role", "content": [{"type": "text", "text"} | {"type": "audio", "path"}]}` dicts;
            audio paths are absolute.
        start_index: Assistant messages at this index or later are training targets; earlier audio
            (a voice reference) is context only.
        speaker: Speaker name, when the data gives one.
    """

    id: str
    source: str
    messages: list[dict]
    start_index: int
    speaker: str | None = None

    def audio_paths(self) -> list[str]:
        """Every audio path, in message order (references first)."""
        return [item["path"] for m in self.messages for item in m["content"] if item["type"] == "audio"]

    def target_audio_paths(self) -> list[str]:
        """Audio paths of the assistant messages that are training targets."""
        return [
            item["path"]
            for i, m in enumerate(self.messages)
            if i >= self.start_index and m["role"] == "assistant"
            for item in m["content"]
            if item["type"] == "audio"
        ]


@dataclass
class BadSample:
    """A sample that cannot be trained on; `reason` says what to fix (several problems joined by "; ")."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class DataError(Exception):
    """The input as a whole is unusable: missing path, unknown format, or a file of the wrong shape."""


@dataclass
class _Candidate:
    """A sample as read: its structural problems, and the audio still to check even when it has some."""

    source: str
    problems: list[str]
    audio: list[str] = field(default_factory=list)
    conversation: Conversation | None = None


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
            candidates = _read_metadata_dir(path, system_prompt)
        else:
            candidates = _read_pairs_dir(path, system_prompt)
    elif path.endswith(".jsonl"):
        candidates = _read_jsonl(path, system_prompt)
    elif path.endswith(".json"):
        candidates = _read_chatml(path, system_prompt)
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


# --- shared checks -------------------------------------------------------------------------------


def _check_audio(
    candidates: list[_Candidate], max_seconds: float
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


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def _get_str(
    record: dict, key: str, problems: list[str], *, required: bool = False, name: bool = False
) -> str | None:
    """A string field; null counts as absent. `name` fields (ids, speakers) also take integers."""
    value = record.get(key)
    if value is None:
        if required:
            problems.append(f"missing field '{key}'")
        return None
    if name and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        problems.append(f"field '{key}' must be a string, got {_json_type(value)}")
        return None
    return value


def _resolve(base: str, path: str) -> str:
    return os.path.abspath(os.path.join(base, path))


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err


def _read_transcript(path: str, problems: list[str], what: str = "transcript") -> str | None:
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
    value = _get_str(record, key, problems, required=required)
    if value is not None and not value.strip():
        problems.append(f"field '{key}' is empty")
        return None
    return _resolve(base, value) if value is not None else None


def _text(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def _pair_candidate(
    source: str,
    problems: list[str],
    sample_id: str,
    system_prompt: str,
    text: str | None,
    audio: str | None,
    ref: tuple[str, str] | None = None,
    scene: str | None = None,
    speaker: str | None = None,
) -> _Candidate:
    """Formats 2 and 3: system [+ scene] [+ user ref text + assistant ref audio] + user text + audio.

    `ref` is (reference text, reference audio). Without problems, `text` and `audio` are set.
    """
    paths = [p for p in (ref[1] if ref else None, audio) if p is not None]
    if problems or text is None or audio is None:
        return _Candidate(source, problems, paths)
    messages = [_text("system", system_prompt)]
    if scene and scene.strip():
        messages.append(_text("scene", scene.strip()))
    for turn_text, turn_audio in ([ref] if ref else []) + [(text, audio)]:
        audio_turn = {"role": "assistant", "content": [{"type": "audio", "path": turn_audio}]}
        messages += [_text("user", turn_text), audio_turn]
    conversation = Conversation(sample_id, source, messages, len(messages) - 1, speaker)
    return _Candidate(source, problems, paths, conversation)


def _reference(
    ref_text: str | None, ref_audio: str | None, keys: tuple[str, str], problems: list[str]
) -> tuple[str, str] | None:
    """(text, audio) of a reference, or None. A reference clip needs its transcript: the chat format puts a
    user turn with text before every assistant audio turn, and an empty one would teach speech without text.
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


def _read_jsonl(path: str, system_prompt: str) -> list[_Candidate]:
    base = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    candidates = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            source = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                if not line.strip():
                    continue
                record = json.loads(line)
            except UnicodeDecodeError as err:
                candidates.append(_Candidate(source, [f"line is not UTF-8 text: {err}"]))
            except json.JSONDecodeError as err:
                candidates.append(_Candidate(source, [f"line is not valid JSON: {err}"]))
            else:
                candidates.append(_jsonl_candidate(record, base, f"{stem}-{lineno}", source, system_prompt))
    return candidates


def _jsonl_candidate(record: Any, base: str, sample_id: str, source: str, system_prompt: str) -> _Candidate:
    if not isinstance(record, dict):
        return _Candidate(source, [f"line must be a JSON object, got {_json_type(record)}"])
    problems: list[str] = []
    audio = _get_path(record, "audio", base, problems, required=True)
    text = _get_str(record, "text", problems, required=True)
    if text is not None and not text.strip():
        problems.append("empty transcript")
    ref_text = _get_str(record, "ref_text", problems)
    ref = _reference(
        ref_text, _get_path(record, "ref_audio", base, problems), ("ref_text", "ref_audio"), problems
    )
    scene = _get_str(record, "scene", problems)
    speaker = _get_str(record, "speaker", problems, name=True)
    text = text.strip() if text else None
    return _pair_candidate(source, problems, sample_id, system_prompt, text, audio, ref, scene, speaker)


# --- format 2: a directory -----------------------------------------------------------------------


def _read_metadata_dir(directory: str, system_prompt: str) -> list[_Candidate]:
    meta_path = os.path.join(directory, "metadata.json")
    meta = _read_json(meta_path)
    samples = meta.get("samples") if isinstance(meta, dict) else None
    if not isinstance(samples, list):
        raise DataError(f"{meta_path}: expected an object with a 'samples' list of sample objects")
    base = os.path.abspath(directory)
    seen: dict[str, str] = {}
    candidates = []
    for i, sample in enumerate(samples):
        source = f"{meta_path} samples[{i}]"
        if not isinstance(sample, dict):
            candidates.append(_Candidate(source, [f"sample must be an object, got {_json_type(sample)}"]))
            continue
        problems: list[str] = []
        sample_id = _get_str(sample, "id", problems, required=True, name=True)
        if sample_id is not None and sample_id in seen:
            problems.append(f"duplicate id '{sample_id}' (also {seen[sample_id]})")
        elif sample_id is not None:
            seen[sample_id] = source
        candidates.append(_metadata_candidate(sample, base, sample_id or "", source, system_prompt, problems))
    return candidates


def _metadata_candidate(
    sample: dict, base: str, sample_id: str, source: str, system_prompt: str, problems: list[str]
) -> _Candidate:
    audio = _get_path(sample, "audio_file", base, problems, required=True)
    transcript_file = _get_path(sample, "transcript_file", base, problems, required=True)
    text = _read_transcript(transcript_file, problems) if transcript_file else None
    ref_text = _get_str(sample, "ref_transcript", problems)
    ref_file = _get_path(sample, "ref_transcript_file", base, problems)
    if ref_text is not None and ref_file is not None:
        problems.append("give ref_transcript or ref_transcript_file, not both")
    elif ref_file is not None:
        # An unreadable file is reported here; the placeholder keeps _reference from calling it missing.
        ref_text = _read_transcript(ref_file, problems, "reference transcript") or "-"
    ref_audio = _get_path(sample, "ref_audio_file", base, problems)
    ref = _reference(ref_text, ref_audio, ("ref_transcript", "ref_audio_file"), problems)
    scene = _get_str(sample, "scene", problems)
    speaker = _get_str(sample, "speaker_id", problems, name=True)
    return _pair_candidate(source, problems, sample_id, system_prompt, text, audio, ref, scene, speaker)


def _read_pairs_dir(directory: str, system_prompt: str) -> list[_Candidate]:
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
        text = _read_transcript(os.path.join(base, text_name), problems) if text_name else None
        audio = os.path.join(base, audio_names[0]) if len(audio_names) == 1 else None
        candidates.append(_pair_candidate(source, problems, stem, system_prompt, text, audio))
    return candidates


# --- format 1: ChatML JSON list ------------------------------------------------------------------


def _read_chatml(path: str, system_prompt: str) -> list[_Candidate]:
    items = _read_json(path)
    if isinstance(items, dict) and "samples" in items:
        raise DataError(f"{path}: is a dataset directory's metadata.json; pass its directory instead")
    if not isinstance(items, list):
        raise DataError(
            f"{path}: expected a JSON list of ChatML samples "
            f'({{"messages": [...], "start_index": n}}), got {_json_type(items)}'
        )
    base = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    return [
        _chatml_candidate(item, base, f"{stem}-{i}", f"{path}[{i}]", system_prompt)
        for i, item in enumerate(items)
    ]


def _chatml_candidate(item: Any, base: str, sample_id: str, source: str, system_prompt: str) -> _Candidate:
    if not isinstance(item, dict):
        return _Candidate(source, [f"sample must be an object, got {_json_type(item)}"])
    problems: list[str] = []
    raw_messages = item.get("messages")
    if raw_messages is None:
        return _Candidate(source, ["missing field 'messages'"])
    if not isinstance(raw_messages, list) or not raw_messages:
        return _Candidate(
            source, [f"field 'messages' must be a non-empty list, got {_json_type(raw_messages)}"]
        )
    messages = [_chatml_message(raw, f"messages[{i}]", base, problems) for i, raw in enumerate(raw_messages)]
    audio = [c["path"] for m in messages if m for c in m["content"] if c["type"] == "audio"]

    misc = item.get("misc")
    speaker = _get_str(item, "speaker", problems, name=True)
    if speaker is None and isinstance(misc, dict):
        speaker = _get_str(misc, "speaker", problems, name=True)  # where the original loader also looks
    start = _start_index(item, raw_messages, problems)
    if start is not None and not any(
        m and m["role"] == "assistant" and any(c["type"] == "audio" for c in m["content"])
        for m in messages[start:]
    ):
        problems.append(f"no assistant audio at or after start_index {start}, so nothing to train on")
    if problems or start is None:
        return _Candidate(source, problems, audio)
    ready = [m for m in messages if m is not None]
    if ready[0]["role"] != "system":
        ready.insert(0, _text("system", system_prompt))
        start += 1
    return _Candidate(source, problems, audio, Conversation(sample_id, source, ready, start, speaker))


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
        problems.append(f"field 'start_index' must be an integer, got {_json_type(start)}")
        return None
    if not 0 <= start < len(raw_messages):
        problems.append(f"start_index {start} is out of range for {len(raw_messages)} messages")
        return None
    return start


def _chatml_message(raw: Any, label: str, base: str, problems: list[str]) -> dict | None:
    """One message in the normal form, or None when it is unusable (its problems are recorded)."""
    if not isinstance(raw, dict):
        problems.append(f"{label}: must be an object with 'role' and 'content', got {_json_type(raw)}")
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
        problems.append(f"{label}: content must be a string, an object or a list, got {_json_type(value)}")
        return None
    content = []
    for item, where in zip(items, labels, strict=True):
        if isinstance(item, str):  # the original loader accepts bare strings in a content list
            content.append({"type": "text", "text": item})
        elif not isinstance(item, dict):
            problems.append(f"{where}: must be a string or an object, got {_json_type(item)}")
        elif item.get("type") == "text":
            if isinstance(item.get("text"), str):
                content.append({"type": "text", "text": item["text"]})
            else:
                problems.append(
                    f"{where}: text item needs a string 'text', got {_json_type(item.get('text'))}"
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
            problems.append(f"{where}: '{key}' must be a file path, got {_json_type(value)}")
            return None
        if value.startswith("file://"):
            value = value.removeprefix("file://")
        elif "://" in value:
            problems.append(f"{where}: {key} {value!r} is a URL; only local files are supported")
            return None
        return _resolve(base, value)
    if item.get("raw_audio"):
        problems.append(f"{where}: inline raw_audio is not supported; save it to a file and give its path")
    else:
        problems.append(f"{where}: audio item has no 'audio_url', 'path' or 'url'")
    return None
