"""The options of `build-dataset` alone (long recordings -> a training set, docs/bring-your-data.md).

Declared with `opt` and collected in `trainer.config.options` as a command group: in its
--help and the docs, not in the chart.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config.declare import PathStr, opt


@dataclass
class BuildArgs:
    """build-dataset: segmentation, transcripts, filters and references."""

    recordings_dir: PathStr | None = opt(
        None, "build-dataset: folder of long recordings (any format libsndfile reads), one folder per speaker or "
        "one speaker per recording; NAME.txt beside NAME.wav is its script, one line per utterance.",
    )
    dataset_dir: PathStr | None = opt(
        None, "build-dataset: where the training set is written (train.json, clips/, build-report.json) and "
        "the state that lets an interrupted build resume (.build/).",
    )
    min_seconds: float = opt(1.0, "build-dataset: shortest clip kept.", minimum=0.0)
    max_seconds: float = opt(
        20.0, "build-dataset: longest clip kept; a longer utterance is split at its longest pause.",
        minimum=0.0, exclusive_min=True,
    )
    min_pause_seconds: float = opt(
        0.3, "build-dataset: silence that ends an utterance; shorter pauses stay inside a clip.",
        minimum=0.0, exclusive_min=True,
    )
    min_rms_db: float = opt(-45.0, "build-dataset: clips quieter than this RMS level (dBFS) are rejected.")
    min_chars_per_second: float = opt(
        4.0, "build-dataset: transcripts with fewer characters (spaces aside) per second of audio are rejected "
        "as suspicious.", minimum=0.0,
    )
    max_chars_per_second: float = opt(
        30.0, "build-dataset: transcripts with more characters per second are rejected as suspicious.",
        minimum=0.0, exclusive_min=True,
    )
    reference_pool: int = opt(
        3, "build-dataset: each speaker's references are taken in turn from this many of its cleanest clips.",
        minimum=1,
    )
    workers: int = opt(1, "build-dataset: recordings processed in parallel (processes).", minimum=1)
