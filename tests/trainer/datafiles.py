"""Small real datasets for the reader tests: clips cut from the bundled demo speech, and the JSON and JSONL
files that point at them, loaded the way training loads them (through `trainer.data.load`)."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile as sf

from trainer.data.load import load_conversations
from trainer.data.samples import Conversation

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


SEED_SYSTEM = "You are a helpful assistant capable of generating speech in the voice of the provided reference audio."
SEED_INSTRUCTION = "Please generate speech for given text in reference audio's voice: "
# Transcripts the seed datasets mix with English: Arabic with its diacritics (the audio stays the bundled
# English speech; the reader and the tokenizer are what these exercise).
ARABIC = ("مَرْحَبًا بِكُمْ فِي البَيْتِ", "السَّمَاءُ صَافِيَةٌ اليَوْمَ")


def demo_pairs() -> list[tuple[str, Path]]:
    """(transcript, clip) of every target of the bundled demo dataset, in its order."""
    pairs = []
    for sample in json.loads((DEMO / "train.json").read_text()):
        user_turn, audio_turn = sample["messages"][-2:]
        pairs.append((user_turn["content"], DEMO / audio_turn["content"]["audio_url"]))
    return pairs


def seed_sample(ref: tuple[str, str], target: tuple[str, str], seconds: float, name: str) -> dict:
    """One sample in the seed scripts' ChatML layout; `ref` and `target` are (transcript, relative path)."""
    return {
        "messages": [
            {"role": "system", "content": SEED_SYSTEM},
            {"role": "user", "content": [
                {"type": "text", "text": ref[0]},
                {"type": "audio", "audio_url": ref[1], "raw_audio": "", "duration": None, "offset": None},
                {"type": "text", "text": SEED_INSTRUCTION + target[0]},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": target[0]},
                {"type": "audio", "audio_url": target[1], "raw_audio": "", "duration": round(seconds, 2),
                 "offset": None},
            ]},
        ],
        "start_index": 0,
        "speaker": name,
        "misc": {"sample_id": name, "ref_transcript": ref[0], "target_transcript": target[0],
                 "duration": round(seconds, 2)},
    }


def seed_dataset(directory: Path, count: int = 12, rate: int = 22050, arabic: bool = True) -> Path:
    """A dataset exactly in the seed scripts' layout: `train.json` beside `datasets/part_1/*.wav`.

    The clips are the bundled demo speech resampled to `rate` (22.05 kHz, espeak-ng's own rate, by default)
    and written as 16-bit WAV, paths relative to the JSON file (`./datasets/part_1/...`), every clip's
    `duration` its full length and `offset` null, the reference of sample i being the target of i + 1.
    """
    import torch
    import torchaudio.functional

    part = directory / "datasets" / "part_1"
    part.mkdir(parents=True, exist_ok=True)
    pairs = demo_pairs()[:count]
    written: list[tuple[str, str, float]] = []
    for i, (text, clip) in enumerate(pairs):
        samples, source_rate = sf.read(clip, dtype="float32")
        resampled = torchaudio.functional.resample(torch.from_numpy(samples), source_rate, rate).numpy()
        name = f"target_{i + 1:04d}.wav"
        sf.write(part / name, resampled, rate, subtype="PCM_16")
        if arabic and i < len(ARABIC):
            text = ARABIC[i]
        written.append((text, f"./datasets/part_1/{name}", len(resampled) / rate))
    samples = [
        seed_sample(written[(i + 1) % len(written)][:2], written[i][:2], written[i][2], f"sample_{i + 1:04d}")
        for i in range(len(written))
    ]
    path = directory / "train.json"
    path.write_text(json.dumps(samples, ensure_ascii=False, indent=1), encoding="utf-8")  # as the seed files are
    return path
