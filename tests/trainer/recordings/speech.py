"""Long recordings made from short espeak-ng clips joined by silences of known length, so every utterance's true
start and end are known to the sample."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.tooling import require_tool

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Every morning she walks along the quiet river.",
    "Please call Stella and ask her to bring these things.",
    "We will meet again at the old station tomorrow.",
    "A small boat drifted slowly past the harbour wall.",
]


def spoken(voice: str, text: str) -> tuple[np.ndarray, int]:
    """espeak-ng's clip of `text`, trimmed to its first and last audible sample (the true utterance)."""
    require_tool("espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "one.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
        samples, rate = sf.read(wav, dtype="float32")
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0]: loud[-1] + 1], rate


def long_recording(path: Path, voice: str, texts: list[str], pauses: list[float], lead: float = 0.7,
                   ) -> list[tuple[float, float]]:
    """Write `texts` spoken with `pauses` (seconds) between them and `lead` seconds of silence at both ends; return
    each utterance's true (start, end) in seconds, counted in the samples written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clips = [spoken(voice, text) for text in texts]
    rate = clips[0][1]
    gaps = [round(g * rate) for g in [*pauses[: len(texts) - 1], lead]]
    out, truth, at = [np.zeros(round(lead * rate), dtype=np.float32)], [], round(lead * rate)
    for (samples, _), gap in zip(clips, gaps, strict=True):
        truth.append((at / rate, (at + len(samples)) / rate))
        out += [samples, np.zeros(gap, dtype=np.float32)]
        at += len(samples) + gap
    sf.write(path, np.concatenate(out), rate, subtype="PCM_16")
    return truth
