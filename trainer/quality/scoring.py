"""Score a set of generated clips.

Per clip WER/CER (with a recognizer) and speaker similarity (with an x-vector model and a reference), their means and
the corpus error rates, as written to `samples.jsonl` and pushed as series.

Two WERs, because the two conventions disagree on short clips: the mean of per-clip rates (what Seed-TTS-eval
averages and publishes) and the corpus rate (all errors over all reference words), which weighs a clip by
its length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer.quality.intelligibility import Transcriber
from trainer.quality.normalize import TextRules, count_errors, language_code, spelling_map
from trainer.quality.similarity import SpeakerEncoder

log = logging.getLogger(__name__)
MEANS = {"wer": "wer", "cer": "cer", "speaker_similarity": "speaker_similarity"}


@dataclass
class Scorer:
    """Either model may be missing: its scores are then left out."""

    transcriber: Transcriber | None = None
    speakers: SpeakerEncoder | None = None
    rules: TextRules = field(default_factory=TextRules)

    @classmethod
    def load(cls, asr_model_path: str | None, speaker_model_path: str | None, language: str | None = None,
             strip_diacritics: bool = False) -> Scorer:
        """A scorer with the recognizer and the speaker encoder whose paths are given, and their text rules."""
        rules = TextRules(language_code(language), strip_diacritics, spelling_map(asr_model_path))
        return cls(Transcriber(asr_model_path, language=language) if asr_model_path else None,
                   SpeakerEncoder(speaker_model_path) if speaker_model_path else None, rules)

    @property
    def active(self) -> bool:
        """Whether there is anything to score with."""
        return self.transcriber is not None or self.speakers is not None

    def score(self, text: str, samples: np.ndarray, rate: int,
              reference: tuple[np.ndarray, int] | None) -> dict[str, Any]:
        """Scores of one clip: what the recognizer heard with its error rates, and the speaker similarity.

        Args:
            text (`str`):
                What the clip was meant to say.
            samples (`np.ndarray`):
                The clip, mono.
            rate (`int`):
                Its sample rate, in Hz.
            reference (`tuple[np.ndarray, int]`):
                Samples and rate of its voice reference, or None when it has none (no speaker similarity then).
        """
        out: dict[str, Any] = {}
        if self.transcriber is not None:
            heard = self.transcriber.transcribe(samples, rate) if len(samples) else ""
            counts = count_errors(text, heard, self.rules)
            out.update(transcript=heard, wer=counts.wer, cer=counts.cer, wer_unit=counts.unit,
                       wer_errors=counts.errors, wer_length=counts.units, cer_errors=counts.char_errors,
                       cer_length=counts.chars)
        if self.speakers is not None and reference is not None and len(samples):
            out["speaker_similarity"] = self.speakers.similarity(samples, rate, *reference)
        return out


def means(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each score over the clips that have it."""
    out = {}
    for key in MEANS:
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        if values:
            out[key] = float(np.mean(values))
    return out


def corpus_rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    """All errors over all reference words (characters), of the clips that carry their counts."""
    out = {}
    for name in ("wer", "cer"):
        counted = [r for r in rows if r.get(f"{name}_errors") is not None and r.get(f"{name}_length") is not None]
        length = sum(int(r[f"{name}_length"]) for r in counted)
        if length:
            out[f"{name}_corpus"] = sum(int(r[f"{name}_errors"]) for r in counted) / length
    return out
