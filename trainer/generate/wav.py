"""Generated clips on disk: 16-bit PCM WAV files and the `samples.jsonl` index that says what each one is."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

INDEX = "samples.jsonl"


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Write mono float samples as 16-bit PCM, atomically (a reader never sees half a file)."""
    import soundfile as sf

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    sf.write(str(tmp), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, p)


def write_index(directory: str | os.PathLike[str], rows: list[dict[str, Any]]) -> Path:
    """`directory/samples.jsonl`: one JSON object per clip (file, text, reference, seconds, stopped, scores)."""
    p = Path(directory) / INDEX
    tmp = p.with_name(f".{INDEX}.tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, p)
    return p


def read_index(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a clip folder's index, as `write_index` wrote them."""
    p = Path(directory) / INDEX
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
