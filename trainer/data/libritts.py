"""Reader of the LibriTTS and LibriTTS-R layout.

`SPEAKER/CHAPTER/UTT.wav` with `UTT.normalized.txt` (or, where that is missing, `UTT.original.txt`) beside it, under the
directory given (one subset such as `train-clean-100/`).

The speaker is the first folder, so `trainer.data.references` pairs each target with another clip of the same
speaker.
"""

from __future__ import annotations

import os

from trainer.data.pairs import pair_candidate, read_transcript
from trainer.data.samples import Candidate

TRANSCRIPTS = (".normalized.txt", ".original.txt")


def _subdirs(path: str) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def is_libritts(directory: str) -> bool:
    """Whether the directory's first speaker/chapter folder holds a LibriTTS transcript."""
    for speaker in _subdirs(directory):
        for chapter in _subdirs(os.path.join(directory, speaker)):
            names = os.listdir(os.path.join(directory, speaker, chapter))
            return any(n.endswith(TRANSCRIPTS) for n in names)
    return False


def read_libritts(directory: str, system_prompt: str) -> list[Candidate]:
    """One candidate per `.wav` (and per transcript without one), sorted by speaker, chapter and utterance."""
    base = os.path.abspath(directory)
    candidates = []
    for speaker in _subdirs(base):
        for chapter in _subdirs(os.path.join(base, speaker)):
            folder = os.path.join(base, speaker, chapter)
            names = set(os.listdir(folder))
            utterances = {n[:-4] for n in names if n.endswith(".wav")}
            utterances |= {n[: -len(s)] for n in names for s in TRANSCRIPTS if n.endswith(s)}
            for utt in sorted(utterances):
                candidates.append(_utterance(folder, utt, names, speaker, system_prompt))
    return candidates


def _utterance(folder: str, utt: str, names: set[str], speaker: str, system_prompt: str) -> Candidate:
    problems: list[str] = []
    audio = os.path.join(folder, utt + ".wav")
    source = audio
    if utt + ".wav" not in names:
        problems.append(f"transcript has no audio file (expected {utt}.wav next to it)")
        audio = None  # type: ignore[assignment]
    transcript = next((utt + s for s in TRANSCRIPTS if utt + s in names), None)
    text = None
    if transcript is None:
        problems.append(f"audio file has no transcript (expected {utt}.normalized.txt or {utt}.original.txt)")
    else:
        text = read_transcript(os.path.join(folder, transcript), problems)
    return pair_candidate(source, problems, utt, system_prompt, text, audio, speaker=speaker)
