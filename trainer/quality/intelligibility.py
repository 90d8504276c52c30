"""Word and character error rates of a generated clip against its text, through a local speech recognition
model (a Whisper-family checkpoint, through transformers) and jiwer.

Both texts are normalised alike (lower case, no punctuation, single spaces) before they are compared: a
recognizer's capitals and commas are not intelligibility. The numbers mean something only with a real
recognizer; with a tiny random one (the tests) they only show that the path runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import ConfigError


def normalise(text: str) -> str:
    import jiwer

    return jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                          jiwer.Strip()])(text)


def error_rates(reference: str, hypothesis: str) -> tuple[float, float]:
    """(WER, CER) of `hypothesis` against `reference`; an empty hypothesis of a non-empty text is 1.0."""
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return (0.0, 0.0) if not hyp else (1.0, 1.0)
    return float(jiwer.wer(ref, hyp)), float(jiwer.cer(ref, hyp))


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    import torch
    import torchaudio.functional

    return torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, target).numpy()


def check_model_dir(path: str, option: str) -> None:
    """A transformers checkpoint directory, checked before anything loads."""
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"{option}: not a transformers checkpoint directory (no config.json): {path}")


class Transcriber:
    """A local speech recognizer: samples -> text."""

    def __init__(self, path: str, option: str = "--asr_model_path / ASR_MODEL_PATH") -> None:
        import torch
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

        check_model_dir(path, option)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.processor = AutoProcessor.from_pretrained(path)
        self.model = AutoModelForSpeechSeq2Seq.from_pretrained(path).to(self.device).eval()
        self.rate = int(self.processor.feature_extractor.sampling_rate)

    def transcribe(self, samples: np.ndarray, rate: int, max_new_tokens: int = 128) -> str:
        import torch

        inputs: Any = self.processor(resample(samples, rate, self.rate), sampling_rate=self.rate,
                                     return_tensors="pt")
        # Whisper refuses a budget past its decoder's positions (448 in the real ones), minus its start tokens
        limit = getattr(self.model.config, "max_target_positions", max_new_tokens + 4) - 4
        with torch.inference_mode():
            ids = self.model.generate(inputs.input_features.to(self.device),
                                      max_new_tokens=min(max_new_tokens, limit))
        return str(self.processor.batch_decode(ids, skip_special_tokens=True)[0]).strip()
