"""Transcripts of a recording's clips.

Its script (`NAME.txt` beside `NAME.wav`, one line per utterance in reading order) or a local Whisper-family recognizer
(the loader `evaluate` uses, `trainer.quality.intelligibility`).

A script is matched to the clips by position only, so a count that differs means the segmentation and the
script disagree somewhere; which line belongs to which clip is then unknown, and the recording is reported,
never guessed.
"""

from __future__ import annotations

import os

import numpy as np

_recognizers: dict[str, object] = {}


def script_of(recording: str) -> str | None:
    """The script file beside a recording, or None."""
    path = os.path.splitext(recording)[0] + ".txt"
    return path if os.path.isfile(path) else None


def script_lines(path: str) -> list[str]:
    """The non-blank lines of a script, stripped. Raises ValueError when it is not UTF-8 text."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None


def mismatch(path: str, lines: int, clips: int, recording: str) -> str | None:
    """Why a script's lines cannot be matched to the utterances, or None when the counts agree."""
    if lines == clips:
        return None
    return (f"{lines} transcript lines, but {clips} utterances were found in {recording}; lines are matched to "
            "utterances in order, so the counts must agree (adjust --min_pause_seconds or the script)")


def recognize(model_path: str, samples: np.ndarray, rate: int) -> str:
    """The recognizer's text of one clip; each worker process loads the model once."""
    from trainer.quality.intelligibility import Transcriber

    if model_path not in _recognizers:
        _recognizers[model_path] = Transcriber(model_path)
    return _recognizers[model_path].transcribe(samples, rate)  # type: ignore[attr-defined]
