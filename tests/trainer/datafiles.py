"""Small real datasets for the reader tests: clips cut from the bundled demo speech, and the JSON and JSONL
files that point at them, loaded the way training loads them (through `trainer.data`)."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile as sf

from trainer.data import Conversation, load_conversations

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo_data"
SYSTEM = "Generate audio following instruction."


def load(path, max_audio_seconds: float = 30.0):
    return load_conversations(path, system_prompt=SYSTEM, max_audio_seconds=max_audio_seconds)


def clip(path: Path, seconds: float = 0.5) -> Path:
    """A short real recording: a bundled espeak-ng clip, cut to `seconds` and written in path's format."""
    samples, rate = sf.read(DEMO / "audio" / "gb_female" / "00.flac", dtype="int16")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples[: round(seconds * rate)], rate)
    return path


def user(text):
    return {"role": "user", "content": text}


def assistant(path):
    return {"role": "assistant", "content": {"type": "audio", "audio_url": str(path)}}


def write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def texts(conversation: Conversation) -> list[tuple[str, str]]:
    """(role, text or audio path) per message, to compare whole conversations at a glance."""
    out = []
    for m in conversation.messages:
        for c in m["content"]:
            out.append((m["role"], c["text"] if c["type"] == "text" else c["path"]))
    return out


def distinct_clips(directory: Path, count: int, seconds: float = 1.0) -> Path:
    """A .jsonl manifest of `count` real speech clips whose bytes all differ, so that every one must be encoded
    (the code cache is keyed by content): the bundled clip looped to `seconds`, its first sample set per clip."""
    import numpy as np

    samples, rate = sf.read(DEMO / "audio" / "gb_female" / "00.flac", dtype="int16")
    looped = np.resize(samples, round(seconds * rate))
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        looped[0] = i
        path = directory / f"{i:05d}.wav"
        sf.write(path, looped, rate)
        lines.append({"audio": str(path), "text": f"clip number {i}"})
    return write_jsonl(directory / "train.jsonl", lines)
