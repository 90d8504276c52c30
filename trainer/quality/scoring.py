"""Score a set of generated clips: per clip WER/CER (with a recognizer) and speaker similarity (with an
x-vector model and a reference), and their means, as written to `samples.jsonl` and pushed as series."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.quality.intelligibility import Transcriber, error_rates
from trainer.quality.similarity import SpeakerEncoder

log = logging.getLogger(__name__)
MEANS = {"wer": "wer", "cer": "cer", "speaker_similarity": "speaker_similarity"}


@dataclass
class Scorer:
    """Either model may be missing: its scores are then left out."""

    transcriber: Transcriber | None = None
    speakers: SpeakerEncoder | None = None

    @classmethod
    def load(cls, asr_model_path: str | None, speaker_model_path: str | None) -> Scorer:
        return cls(Transcriber(asr_model_path) if asr_model_path else None,
                   SpeakerEncoder(speaker_model_path) if speaker_model_path else None)

    @property
    def active(self) -> bool:
        return self.transcriber is not None or self.speakers is not None

    def score(self, text: str, samples: np.ndarray, rate: int,
              reference: tuple[np.ndarray, int] | None) -> dict[str, Any]:
        """Scores of one clip (`reference`: samples and rate of its voice reference, if any)."""
        out: dict[str, Any] = {}
        if self.transcriber is not None:
            heard = self.transcriber.transcribe(samples, rate) if len(samples) else ""
            out["transcript"] = heard
            out["wer"], out["cer"] = error_rates(text, heard)
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
