"""Word and character error rates of a generated clip against its text, through a local recognizer.

The recognizer is a speech recognition model: a Whisper-family checkpoint, through transformers.

Every clip is mixed to mono and resampled to the recognizer's rate before it sees it; a clip longer than the
recognizer's window (30 s for Whisper) is transcribed window by window, each cut placed at the quietest moment
of the window's last seconds, so nothing is dropped. Texts are normalized by `trainer.quality.normalize`. The
numbers mean something only with a real recognizer; with a tiny random one (the tests) they only show the path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config.values import label
from trainer.errors import ConfigError
from trainer.quality.normalize import TextRules, count_errors, language_code

ASR_OPTION = label("asr_model_path")
CUT_SEARCH_SECONDS = 5.0  # a window's cut falls in its last seconds, at the quietest 20 ms


def normalise(text: str) -> str:
    """The language-neutral normalization (NFKC, lower case, no punctuation, single spaces)."""
    from trainer.quality.normalize import basic_normalize

    return basic_normalize(text)


def error_rates(reference: str, hypothesis: str, rules: TextRules | None = None) -> tuple[float, float]:
    """(WER, CER) of `hypothesis` against `reference`; an empty hypothesis of a non-empty text is 1.0."""
    counts = count_errors(reference, hypothesis, rules)
    return counts.wer, counts.cer


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`samples` at `target` Hz, with the resampler the rest of the package uses."""
    if rate == target:
        return samples
    import torch
    import torchaudio.functional

    return torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, target).numpy()


def prepare(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 at `target` Hz from soundfile's (frames,) or (frames, channels) samples."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    if x.ndim != 1:  # a (frames, channels) array would become `frames` two-sample clips
        raise ValueError(f"expected mono samples or (frames, channels), got shape {x.shape}")
    return np.ascontiguousarray(resample(x, rate, target), dtype=np.float32)


def check_model_dir(path: str, option: str, kinds: dict[str, str] | None = None, what: str = "") -> dict[str, Any]:
    """A transformers checkpoint directory whose `model_type` is one of `kinds`, checked before anything loads."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise ConfigError(f"{option}: not a transformers checkpoint directory (no config.json): {path}")
    try:
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{option}: {cfg} is not valid JSON: {err}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if kinds is not None and model_type not in kinds:
        raise ConfigError(f"{option} ({path}): model_type {model_type!r} is not {what}; expected one of "
                          f"{', '.join(sorted(kinds))}")
    return config


def check_asr_dir(path: str, option: str = ASR_OPTION) -> None:
    """Refuse a directory that is not a speech recognition checkpoint, before anything loads."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

    check_model_dir(path, option, dict(MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES),
                    "a speech recognition checkpoint (AutoModelForSpeechSeq2Seq, such as Whisper)")


def load_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a checkpoint that does not load raises, to turn them into a `ConfigError`."""
    from safetensors import SafetensorError

    return (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError)


def load_failure(option: str, path: str, err: BaseException) -> ConfigError:
    """A one-line `ConfigError` naming the option and the path of a checkpoint that does not load."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConfigError(f"{option} ({path}): the checkpoint does not load: {first[:300]}")


def windows(samples: np.ndarray, window: int, rate: int) -> list[np.ndarray]:
    """`samples` cut into pieces of at most `window` samples, each cut at a pause.

    A cut is placed at the quietest 20 ms of the last `CUT_SEARCH_SECONDS` of its window (a pause between words,
    in speech).
    """
    frame = max(1, rate // 50)
    search = min(window // 2, int(CUT_SEARCH_SECONDS * rate))
    out, x = [], samples
    while len(x) > window:
        tail = x[window - search: window]
        n = len(tail) // frame
        energy = (tail[: n * frame].reshape(n, frame) ** 2).sum(axis=1)
        cut = window - search + int(np.argmin(energy)) * frame + frame // 2
        out.append(x[:cut])
        x = x[cut:]
    out.append(x)
    return out


class Transcriber:
    """A local speech recognizer: samples -> text, in the decoding language `language` when given."""

    def __init__(self, path: str, option: str = ASR_OPTION, language: str | None = None) -> None:
        import torch
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

        check_asr_dir(path, option)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.processor = AutoProcessor.from_pretrained(path)
            self.model = AutoModelForSpeechSeq2Seq.from_pretrained(path).to(self.device).eval()
        except load_errors() as err:
            raise load_failure(option, path, err) from None
        extractor = self.processor.feature_extractor
        self.rate = int(extractor.sampling_rate)
        self.window = int(getattr(extractor, "n_samples", 0) or 30 * self.rate)
        self.language = language_code(language)
        if self.language is not None:
            known = getattr(self.model.generation_config, "lang_to_id", None) or {}
            if f"<|{self.language}|>" not in known:
                listed = ", ".join(sorted(k.strip("<|>") for k in known)[:20]) or "none: it takes no language"
                raise ConfigError(f"{label('language')}: {language!r} is not a language of the ASR model {path} "
                                  f"(it knows: {listed})")

    def token_ids(self, samples: np.ndarray, max_new_tokens: int = 128) -> list[int]:
        """Token ids (decoder prompt included) of one window of mono samples at the recognizer's rate."""
        import torch

        inputs: Any = self.processor(samples, sampling_rate=self.rate, return_tensors="pt")
        # Whisper refuses a budget past its decoder's positions (448 in the real ones), minus its start tokens
        limit = getattr(self.model.config, "max_target_positions", max_new_tokens + 4) - 4
        options: dict[str, Any] = {"max_new_tokens": min(max_new_tokens, limit)}
        if self.language is not None:
            options.update(language=self.language, task="transcribe")
        with torch.inference_mode():
            ids = self.model.generate(inputs.input_features.to(self.device), **options)
        return [int(i) for i in ids[0]]

    def transcribe(self, samples: np.ndarray, rate: int, max_new_tokens: int = 128) -> str:
        """The text of a clip, transcribed window by window so that no part of a long clip is dropped."""
        x = prepare(samples, rate, self.rate)
        texts = [str(self.processor.decode(self.token_ids(w, max_new_tokens), skip_special_tokens=True)).strip()
                 for w in windows(x, self.window, self.rate)]
        return " ".join(t for t in texts if t)
