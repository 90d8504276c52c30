"""Voice-activity segmentation of a long recording into utterance clips, with silero-vad's model.

The model scores 32 ms windows at 16 kHz and is recurrent, so one stream is scored one window after another.
A recording is cut into `STREAMS` sections that are scored side by side as one batch: each section starts
`WARMUP_SECONDS` early and the scores of that warm-up are dropped, so every kept score comes from a model that
has heard as much context as it needs (a fraction of a second). On one core this is several times the
throughput of scoring the recording as one stream (bench/bench_build_dataset.py).

Clips are utterances: speech regions separated by pauses of at least `min_pause` seconds. An utterance longer
than the maximum is split at its longest inner pause, again and again, until every piece fits; one without
any pause left stays whole and is rejected as too long by the filters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 16000
WINDOW = 512  # samples per score at 16 kHz: 32 ms
STREAMS = 32
WARMUP_SECONDS = 1.0
# Speech starts where the score reaches ON, reaching back over the windows just before it that score above
# ONSET (the window where a word begins is only partly speech), and ends at the first window under OFF: the
# model's score decays over two or three windows after the last sound, so a lower OFF would end clips late.
ON, ONSET, OFF = 0.5, 0.15, 0.7
MIN_SPEECH_SECONDS = 0.1  # shorter blips are noise
PAD_SECONDS = 0.03  # kept before each utterance, never more than half the pause before it (the end lags already)

_model = None


def _load_model():
    global _model
    if _model is None:
        from silero_vad import load_silero_vad

        _model = load_silero_vad()  # the TorchScript model shipped inside the package: no download
    return _model


def speech_scores(samples16k: np.ndarray) -> np.ndarray:
    """Speech probability of every 32 ms window of a 16 kHz mono signal."""
    import torch

    n = -(-len(samples16k) // WINDOW)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    streams = max(1, min(STREAMS, n // 64))
    per = -(-n // streams)
    warm = int(WARMUP_SECONDS * RATE / WINDOW) if streams > 1 else 0
    padded = np.zeros((n + warm) * WINDOW, dtype=np.float32)
    padded[warm * WINDOW: warm * WINDOW + len(samples16k)] = samples16k
    rows = np.zeros((streams, per + warm, WINDOW), dtype=np.float32)
    windows = padded.reshape(-1, WINDOW)
    for s in range(streams):
        part = windows[s * per: s * per + per + warm]  # section s, preceded by its warm-up
        rows[s, : len(part)] = part
    model = _load_model()
    model.reset_states()
    out = np.empty((streams, per + warm), dtype=np.float32)
    batch = torch.from_numpy(rows)
    with torch.inference_mode():
        for k in range(per + warm):
            out[:, k] = model(batch[:, k, :], RATE)[:, 0].numpy()
    return out[:, warm:].reshape(-1)[:n]


@dataclass
class Utterance:
    """A clip of the recording in seconds, and the speech regions inside it (for splitting and scoring)."""

    start: float
    end: float
    regions: list[tuple[float, float]]

    @property
    def seconds(self) -> float:
        """The utterance's length in seconds."""
        return self.end - self.start


def speech_regions(scores: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) seconds of each run of speech windows; blips under 0.1 s dropped."""
    step = WINDOW / RATE
    regions, start = [], None
    for i, p in enumerate(scores):
        if start is None and p >= ON:
            start = i
            while start > 0 and scores[start - 1] >= ONSET and (not regions or (start - 1) * step >= regions[-1][1]):
                start -= 1
        elif start is not None and p < OFF:
            regions.append((start * step, i * step))
            start = None
    if start is not None:
        regions.append((start * step, len(scores) * step))
    return [(a, b) for a, b in regions if b - a >= MIN_SPEECH_SECONDS]


def utterances(regions: list[tuple[float, float]], total: float, *, min_pause: float,
               max_seconds: float) -> list[Utterance]:
    """Regions grouped at pauses of at least `min_pause`, over-long groups split at their longest pause, padded."""
    groups: list[list[tuple[float, float]]] = []
    for region in regions:
        if groups and region[0] - groups[-1][-1][1] < min_pause:
            groups[-1].append(region)
        else:
            groups.append([region])
    pieces: list[list[tuple[float, float]]] = []
    for group in groups:
        pieces += _split(group, max_seconds)
    out = []
    for i, piece in enumerate(pieces):
        before = pieces[i - 1][-1][1] if i else 0.0
        after = pieces[i + 1][0][0] if i + 1 < len(pieces) else total
        start = max(before + (piece[0][0] - before) / 2 if i else 0.0, piece[0][0] - PAD_SECONDS)
        end = min(piece[-1][1], (piece[-1][1] + after) / 2, total)
        out.append(Utterance(round(start, 4), round(end, 4), piece))
    return out


def _split(group: list[tuple[float, float]], max_seconds: float) -> list[list[tuple[float, float]]]:
    """The group, split at its longest inner pause until each piece is at most `max_seconds` of speech span."""
    if group[-1][1] - group[0][0] <= max_seconds or len(group) == 1:
        return [group]
    gaps = [group[i + 1][0] - group[i][1] for i in range(len(group) - 1)]
    cut = int(np.argmax(gaps)) + 1  # the first of equal longest pauses: deterministic
    return _split(group[:cut], max_seconds) + _split(group[cut:], max_seconds)
