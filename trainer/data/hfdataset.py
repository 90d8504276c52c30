"""Reader of Hugging Face `datasets` data.

A `save_to_disk` directory (`state.json` and Arrow files, or a `dataset_dict.json` of splits, of which `train` is read),
a `.arrow` file or a `.parquet` file, with an `Audio` column and a text column.

Read with pyarrow alone, not with `datasets`: the files are plain Arrow and Parquet, an `Audio` column is a
struct of the encoded file's `bytes` and its original `path`, and `datasets` would decode through its own
audio backend (torchcodec in recent versions) and bring a dozen dependencies for what pyarrow and libsndfile
already do. No network is touched.

Training reads audio from files (the code cache is keyed by file content), so embedded bytes are written once
to `<dataset>.clips/`, one file per row named by its row and content hash; a later read finds them there.
"""

from __future__ import annotations

import hashlib
import os

from trainer.data.fields import read_json
from trainer.data.pairs import pair_candidate
from trainer.data.samples import Candidate
from trainer.errors import DataError

SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id")


def is_saved_dataset(directory: str) -> bool:
    """Whether `directory` is a `datasets` `save_to_disk` folder (its state or dict file is there)."""
    return any(os.path.isfile(os.path.join(directory, n)) for n in ("state.json", "dataset_dict.json"))


def table_files(path: str) -> list[str]:
    """The Arrow or Parquet files of a path, in row order."""
    if os.path.isfile(path):
        return [path]
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        splits = read_json(os.path.join(path, "dataset_dict.json")).get("splits") or []
        if not splits:
            raise DataError(f"{path}/dataset_dict.json: lists no splits")
        return table_files(os.path.join(path, "train" if "train" in splits else splits[0]))
    state = read_json(os.path.join(path, "state.json"))
    return [os.path.join(path, f["filename"]) for f in state.get("_data_files", [])]


def _read_table(path: str):  # -> pyarrow.Table
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.endswith(".parquet"):
            return pq.read_table(path)
        with pa.memory_map(path) as source:
            try:
                return pa.ipc.open_stream(source).read_all()  # what save_to_disk writes
            except pa.ArrowInvalid:
                source.seek(0)
                return pa.ipc.open_file(source).read_all()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Arrow or Parquet file ({err})") from err


def read_hf_dataset(
    path: str, system_prompt: str, *, text_column: str, audio_column: str, speaker_column: str | None = None
) -> list[Candidate]:
    """One candidate per row, in row order; ids are `<file stem>-<row>`."""
    path = os.path.abspath(path)
    clips_dir = path.rstrip("/") + ".clips"
    candidates: list[Candidate] = []
    for file in table_files(path):
        table = _read_table(file)
        stem = os.path.splitext(os.path.basename(file))[0]
        names = table.schema.names
        speaker = speaker_column or next((c for c in SPEAKER_COLUMNS if c in names), None)
        missing = [(opt, c) for opt, c in (("--audio_column", audio_column), ("--text_column", text_column),
                                            ("--speaker_column", speaker)) if c is not None and c not in names]
        if missing:
            problem = "; ".join(f"no column {c!r} ({opt}); the columns are {', '.join(names)}" for opt, c in missing)
            candidates += [Candidate(f"{file} row {i}", [problem]) for i in range(table.num_rows)]
            continue
        texts = table.column(text_column).to_pylist()
        speakers = table.column(speaker).to_pylist() if speaker else [None] * table.num_rows
        audio = table.column(audio_column).combine_chunks()
        for i, (blob, where, text, who) in enumerate(zip(*_audio_fields(audio, file), texts, speakers, strict=True)):
            source = f"{file} row {i}"
            problems: list[str] = []
            if not isinstance(text, str) or not text.strip():
                problems.append(f"empty or missing text in column {text_column!r}")
                text = None
            clip = _clip_file(blob, where, f"{stem}-{i:06d}", clips_dir, os.path.dirname(file), problems)
            who = None if who is None else str(who)
            candidates.append(pair_candidate(source, problems, f"{stem}-{i}", system_prompt,
                                             text.strip() if text else None, clip, speaker=who))
    return candidates


def _audio_fields(column, file: str) -> tuple[list, list]:
    """(bytes, path) per row of an `Audio` column (a struct of both), or a column of file paths."""
    import pyarrow as pa

    if pa.types.is_struct(column.type):
        names = [column.type.field(i).name for i in range(column.type.num_fields)]
        blobs = column.field("bytes").to_pylist() if "bytes" in names else [None] * len(column)
        paths = column.field("path").to_pylist() if "path" in names else [None] * len(column)
        return blobs, paths
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return [None] * len(column), column.to_pylist()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return column.to_pylist(), [None] * len(column)
    raise DataError(f"{file}: the audio column is {column.type}; expected an Audio column (bytes and path)")


def _clip_file(blob: bytes | None, where: str | None, name: str, clips_dir: str, base: str,
               problems: list[str]) -> str | None:
    """The file holding a row's audio: its embedded bytes written out once, or the local file it names."""
    if blob is not None and len(blob) == 0:
        problems.append("empty audio: the audio column holds 0 bytes")
        return None
    if blob:
        suffix = os.path.splitext(where or "")[1].lower() or ".audio"
        target = os.path.join(clips_dir, f"{name}-{hashlib.sha1(blob).hexdigest()[:12]}{suffix}")
        if not os.path.exists(target):
            os.makedirs(clips_dir, exist_ok=True)
            tmp = f"{target}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, target)  # another rank writing the same bytes meanwhile is harmless
        return target
    if where:
        return where if os.path.isabs(where) else os.path.join(base, where)
    problems.append("no audio: the audio column holds neither bytes nor a path")
    return None
