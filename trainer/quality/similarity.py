"""Speaker similarity.

Cosine similarity of x-vector speaker embeddings (a WavLM speaker-verification checkpoint through transformers'
`AutoModelForAudioXVector`) of a generated clip and its reference clip.

1.0 is the same direction; real speaker-verification models put the same speaker well above different ones,
and a threshold is model-specific. With a tiny random model (the tests) the value only shows the path runs.
"""

from __future__ import annotations

import numpy as np

from trainer.config.values import label
from trainer.quality.intelligibility import check_model_dir, load_errors, load_failure, prepare

SPEAKER_OPTION = label("speaker_model_path")


def check_speaker_dir(path: str, option: str = SPEAKER_OPTION) -> None:
    """Refuse a directory that is not a speaker-verification checkpoint, before anything loads."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES

    check_model_dir(path, option, dict(MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES),
                    "a speaker-verification x-vector checkpoint (AutoModelForAudioXVector, such as WavLM-SV)")


class SpeakerEncoder:
    """A local x-vector model: samples -> one embedding."""

    def __init__(self, path: str, option: str = SPEAKER_OPTION) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioXVector

        check_speaker_dir(path, option)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(path)
            self.model = AutoModelForAudioXVector.from_pretrained(path).to(self.device).eval()
        except load_errors() as err:
            raise load_failure(option, path, err) from None
        self.rate = int(self.extractor.sampling_rate)

    def embed(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """The speaker embedding of a clip."""
        import torch

        inputs = self.extractor(prepare(samples, rate, self.rate), sampling_rate=self.rate, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        return out.embeddings[0].float().cpu().numpy()

    def similarity(self, a: np.ndarray, rate_a: int, b: np.ndarray, rate_b: int) -> float:
        """Cosine similarity of two clips' speaker embeddings: near 1 for the same voice."""
        return cosine(self.embed(a, rate_a), self.embed(b, rate_b))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors; 0 when either is zero."""
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom > 0 else 0.0
