"""Which reader a dataset path needs: told apart by what the path holds, or named with `--data_format`.

The corpus layouts (LJSpeech, LibriTTS, Common Voice, Hugging Face datasets) are recognised by the files their
tools write, so a user points `--train_data_file` at the folder they downloaded; the project's own formats
keep the rules they always had (docs/bring-your-data.md).
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterable
from dataclasses import dataclass

from trainer.config.data import DataFormat
from trainer.data.chatml import read_chatml
from trainer.data.commonvoice import read_commonvoice, table_of
from trainer.data.hfdataset import is_saved_dataset, read_hf_dataset
from trainer.data.libritts import is_libritts, read_libritts
from trainer.data.ljspeech import is_ljspeech, read_ljspeech
from trainer.data.pairs import read_jsonl, read_metadata_dir, read_pairs_dir
from trainer.data.samples import Candidate
from trainer.errors import DataError

FORMATS: tuple[str, ...] = typing.get_args(DataFormat)  # the --data_format choices, "auto" first
# Formats whose samples name their speaker and carry no reference of their own: paired by trainer.data.references.
SPEAKER_CORPORA = ("libritts", "commonvoice", "hf_dataset")


@dataclass(frozen=True)
class ReadOptions:
    """How to read a path: the format (or auto) and the columns of a Hugging Face dataset."""

    data_format: str = "auto"
    text_column: str = "text"
    audio_column: str = "audio"
    speaker_column: str | None = None


def detect_format(path: str) -> str:
    """The format of an existing path, from its name and what it holds."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "metadata.json")):
            return "directory"
        if is_ljspeech(path):
            return "ljspeech"
        if table_of(path) and os.path.isdir(os.path.join(path, "clips")):
            return "commonvoice"
        if is_saved_dataset(path):
            return "hf_dataset"
        if is_libritts(path):
            return "libritts"
        return "directory"
    for suffix, name in ((".jsonl", "jsonl"), (".json", "chatml"), (".tsv", "commonvoice"),
                         (".parquet", "hf_dataset"), (".arrow", "hf_dataset")):
        if path.endswith(suffix):
            return name
    raise DataError(f"{path}: unknown data format; expected one of the layouts in docs/bring-your-data.md "
                    f"or --data_format {{{','.join(FORMATS[1:])}}}")


def read_candidates(path: str, system_prompt: str, options: ReadOptions) -> tuple[str, Iterable[Candidate]]:
    """(format, the samples as read) of an existing path.

    A ChatML list and a JSONL manifest come as iterators, read as they are consumed, so that the raw items
    are never all held at once; an error of the file's content is then raised while they are consumed.
    """
    fmt = detect_format(path) if options.data_format == "auto" else options.data_format
    if fmt not in FORMATS[1:]:
        raise DataError(f"--data_format: unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    is_dir = os.path.isdir(path)
    wants_dir = {"directory": True, "ljspeech": True, "libritts": True, "chatml": False, "jsonl": False}
    if fmt in wants_dir and wants_dir[fmt] != is_dir:
        raise DataError(f"{path}: --data_format {fmt} reads a {'directory' if wants_dir[fmt] else 'file'}")
    if fmt == "chatml":
        return fmt, read_chatml(path, system_prompt)
    if fmt == "jsonl":
        return fmt, read_jsonl(path, system_prompt)
    if fmt == "directory":
        if os.path.isfile(os.path.join(path, "metadata.json")):
            return fmt, read_metadata_dir(path, system_prompt)
        return fmt, read_pairs_dir(path, system_prompt)
    if fmt == "ljspeech":
        if not is_ljspeech(path):
            raise DataError(f"{path}: no metadata.csv; an LJSpeech corpus has metadata.csv beside wavs/")
        return fmt, read_ljspeech(path, system_prompt)
    if fmt == "libritts":
        return fmt, read_libritts(path, system_prompt)
    if fmt == "commonvoice":
        if is_dir and table_of(path) is None:
            raise DataError(f"{path}: no validated.tsv or train.tsv; a Common Voice export has one beside clips/")
        return fmt, read_commonvoice(path, system_prompt)
    if is_dir and not is_saved_dataset(path):
        raise DataError(f"{path}: no state.json or dataset_dict.json; expected a save_to_disk directory, "
                        "a .parquet or an .arrow file")
    return fmt, read_hf_dataset(path, system_prompt, text_column=options.text_column,
                                audio_column=options.audio_column, speaker_column=options.speaker_column)
