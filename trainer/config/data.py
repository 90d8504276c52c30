"""The training data's options.

Where the samples are, which corpus layout, reference clips and what counts as a bad sample (docs/bring-your-data.md);
collected with the other groups in `trainer.config.options`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trainer.config.declare import MIN_AUDIO_SECONDS, PathStr, opt

DataFormat = Literal["auto", "chatml", "jsonl", "directory", "ljspeech", "libritts", "commonvoice", "hf_dataset"]


@dataclass
class DataArgs:
    """Training data, its code cache and what counts as a bad sample."""

    train_data_file: PathStr | None = opt(
        None,
        "Training data: a ChatML JSON list, a JSONL manifest, a directory (metadata.json or wav+txt pairs), or "
        "an LJSpeech, LibriTTS, Common Voice or Hugging Face datasets corpus (docs/bring-your-data.md).",
        required=True,
    )
    eval_data_file: PathStr | None = opt(None, "Evaluation data, in any of the training formats.")
    validation_split: float = opt(
        0.05,
        "Fraction of the training samples held out for evaluation when no eval_data_file is given "
        "(at least one sample).",
        minimum=0.0,
        maximum=0.9,
    )
    cache_dir: PathStr | None = opt(
        None,
        "Directory of the audio code cache (encoded once per file and tokenizer); defaults to "
        "OUTPUT_DIR/code_cache.",
    )
    max_audio_seconds: float = opt(
        30.0, "Longest clip accepted; longer ones are bad samples.", minimum=0.0, exclusive_min=True
    )
    min_audio_seconds: float = opt(
        MIN_AUDIO_SECONDS,
        "Shortest clip accepted; shorter ones (the audio tokenizer cannot encode a few milliseconds) are bad "
        "samples.",
        minimum=0.0,
    )
    skip_bad_samples: bool = opt(
        False,
        "Skip (and count) bad samples instead of stopping before training with a report of all of them.",
    )
    system_prompt: str = opt(
        "Generate audio following instruction.",
        "System message for samples whose format carries none (JSONL manifests and directories).",
    )
    dataloader_num_workers: int = opt(
        0,
        "Data loader worker processes per rank. 0 collates in the training process: a batch from the code "
        "cache costs well under 1% of a step (bench/bench_data_path.py). Workers start with the spawn method.",
        minimum=0,
    )
    data_index: bool = opt(
        True,
        "Keep the prepared samples in a dataset index on disk beside the code cache, memory-mapped by every rank "
        "and reused while the data files and the options that shape samples are unchanged "
        "(docs/training.md#large-datasets); false holds every sample in each rank's memory.",
    )
    prepare_workers: int = opt(
        0,
        "Processes that render and tokenize samples while the dataset index is built (by prepare, or by train "
        "when the index is stale); 0 (auto): 2 where the process may use 2 CPUs or more (its CPU affinity and "
        "cgroup CPU limit), else 1, in the building process itself.",
        minimum=0,
    )
    seed_split: int = opt(
        0, "Seed of the train/validation split and of the reference clips picked for corpora that name "
        "speakers, kept apart from the training seed.",
    )
    # --- corpus layouts (docs/bring-your-data.md) ---
    data_format: DataFormat = opt(
        "auto",
        "Format of train_data_file and eval_data_file; auto tells it from what the path holds "
        "(docs/bring-your-data.md).",
    )
    text_column: str = opt("text", "Hugging Face datasets (save_to_disk, parquet, arrow): the transcript column.")
    audio_column: str = opt("audio", "Hugging Face datasets: the Audio column (encoded bytes and/or a file path).")
    speaker_column: str | None = opt(
        None, "Hugging Face datasets: the speaker column; unset: speaker_id, speaker or client_id where present, "
        "else no speakers (and no reference clips).",
    )
    reference_clips: int = opt(
        1, "Corpora that name speakers (LibriTTS, Common Voice, datasets with a speaker column): reference clips "
        "of the same speaker put before each target (never the target itself); 0: none.", minimum=0,
    )
    reference_max_seconds: float = opt(
        20.0, "Longest clip picked as a reference clip.", minimum=0.0, exclusive_min=True,
    )
    group_by_length: bool = opt(
        True,
        "Batch samples of similar length together (random groups of length-sorted samples): far less "
        "padding when per_device_train_batch_size > 1, the same samples every epoch.",
    )
