"""Reader of the LJSpeech layout.

`metadata.csv` (`id|text|normalized text`, pipe-separated, no header) beside a `wavs/` folder holding `id.wav`.

The normalized text (numbers and abbreviations spelled out) is what the clip speaks, so it is the transcript;
a line with only `id|text` (the many LJSpeech-style corpora that skip normalization) uses the text. The layout
names no speakers, so its samples carry no reference clip (docs/bring-your-data.md).
"""

from __future__ import annotations

import os

from trainer.data.pairs import pair_candidate
from trainer.data.samples import Candidate

METADATA = "metadata.csv"


def is_ljspeech(directory: str) -> bool:
    """Whether `directory` has LJSpeech's `metadata.csv`, the mark of that layout."""
    return os.path.isfile(os.path.join(directory, METADATA))


def read_ljspeech(directory: str, system_prompt: str) -> list[Candidate]:
    """One candidate per non-blank line of `metadata.csv`, in file order; ids are the file's own."""
    meta = os.path.join(directory, METADATA)
    wavs = os.path.join(os.path.abspath(directory), "wavs")
    candidates = []
    seen: dict[str, int] = {}
    with open(meta, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            source = f"{meta}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                candidates.append(Candidate(source, [f"line is not UTF-8 text: {err}"]))
                continue
            if not line.strip():
                continue
            fields = line.split("|")
            if len(fields) not in (2, 3):
                candidates.append(Candidate(source, [
                    f"expected 3 fields 'id|text|normalized text' separated by '|', got {len(fields)}"]))
                continue
            problems: list[str] = []
            sample_id = fields[0].strip()
            text = (fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]).strip()
            if not sample_id:
                problems.append("empty id (field 1)")
            elif sample_id in seen:
                problems.append(f"duplicate id '{sample_id}' (also line {seen[sample_id]})")
            else:
                seen[sample_id] = lineno
            if not text:
                problems.append("empty transcript")
            audio = os.path.join(wavs, sample_id + ".wav") if sample_id else None
            candidates.append(pair_candidate(source, problems, sample_id, system_prompt, text or None, audio))
    return candidates
