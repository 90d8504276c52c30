"""What the filters of build-dataset look at in a clip, and the reason each one rejects it for.

The reasons are counted by name in build-report.json, so every name here is part of the report's format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLIPPED_LEVEL = 0.999  # of full scale: a sample at the rail
CLIPPED_FRACTION = 0.001  # more samples than this at the rail: audibly clipped
FRAME_SECONDS = 0.02

REASONS = ("too_short", "too_long", "clipped", "too_quiet", "no_speech", "empty_text", "suspicious_text",
           "transcript_mismatch")


@dataclass(frozen=True)
class Limits:
    """The filters' thresholds: a clip's length, level and speaking rate."""
    min_seconds: float
    max_seconds: float
    min_rms_db: float
    min_chars_per_second: float
    max_chars_per_second: float


@dataclass(frozen=True)
class Measures:
    """Level, clipping and a cleanliness score (speech level over the noise floor, in dB)."""

    rms_db: float
    clipped: float
    clean_db: float


def measure(samples: np.ndarray, rate: int) -> Measures:
    """Level, clipping and cleanliness of a clip, what the filters decide on."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    clipped = float(np.mean(np.abs(samples) >= CLIPPED_LEVEL)) if len(samples) else 0.0
    hop = max(1, round(FRAME_SECONDS * rate))
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop) if len(samples) >= hop else samples[None, :]
    energy = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)) + 1e-6
    clean = 20 * np.log10(np.percentile(energy, 90) / np.percentile(energy, 10))
    return Measures(round(_db(rms), 2), round(clipped, 5), round(float(clean), 2))


def _db(rms: float) -> float:
    return float(20 * np.log10(max(rms, 1e-9)))


def audio_reason(seconds: float, m: Measures, limits: Limits) -> str | None:
    """Why a clip's audio is rejected, or None."""
    if seconds < limits.min_seconds:
        return "too_short"
    if seconds > limits.max_seconds:
        return "too_long"
    if m.clipped > CLIPPED_FRACTION:
        return "clipped"
    if m.rms_db < limits.min_rms_db:
        return "too_quiet"
    return None


def text_reason(text: str, seconds: float, limits: Limits) -> str | None:
    """Why a clip's transcript is rejected, or None.

    Empty, or a speaking rate no voice has (the recognizer hallucinated, or a script line was matched to the wrong
    clip).
    """
    if not text.strip():
        return "empty_text"
    rate = len(text.replace(" ", "")) / seconds
    if not limits.min_chars_per_second <= rate <= limits.max_chars_per_second:
        return "suspicious_text"
    return None
