"""Real espeak-ng speech of two speakers, and the same clips laid out as each corpus layout; the expected side is
written by hand in the project's JSONL manifest (format 3), never through the corpus readers."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.tooling import require_tool

# (speaker, espeak-ng voice, sentence): speaker A has two clips (each is the other's reference), B one (no reference).
UTTERANCES = [
    ("1034", "en-us", "The quick brown fox jumps over the lazy dog."),
    ("1034", "en-us", "Every morning she walks along the quiet river."),
    ("2277", "en-gb", "Please call Stella and ask her to bring these things."),
]


@dataclass
class Utterance:
    speaker: str
    text: str
    samples: np.ndarray
    rate: int


def speak(tmp: Path) -> list[Utterance]:
    """The utterances, spoken by espeak-ng (22.05 kHz mono)."""
    require_tool("espeak-ng")
    out = []
    for i, (speaker, voice, text) in enumerate(UTTERANCES):
        wav = tmp / f"speech-{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
        samples, rate = sf.read(wav, dtype="int16")
        out.append(Utterance(speaker, text, samples, rate))
    return out


def reference_of(index: int) -> int | None:
    """The one possible reference of utterance `index`: the other clip of its speaker, if there is one."""
    same = [j for j, u in enumerate(UTTERANCES) if u[0] == UTTERANCES[index][0] and j != index]
    return same[0] if same else None


def expected_lines(paths: list[Path], texts: list[str], *, speakers: bool) -> list[dict]:
    """The JSONL lines of the same clips, in the same order, each with its reference where the layout has speakers."""
    lines = []
    for i, (path, text) in enumerate(zip(paths, texts, strict=True)):
        line: dict = {"audio": str(path), "text": text}
        if speakers:
            line["speaker"] = UTTERANCES[i][0]
            ref = reference_of(i)
            if ref is not None:
                line |= {"ref_audio": str(paths[ref]), "ref_text": texts[ref]}
        lines.append(line)
    return lines
