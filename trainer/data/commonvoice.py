"""Reader of a Common Voice export: `validated.tsv` (or `train.tsv`) with a header line and `clips/*.mp3`.

Columns used: `path` (the clip's file name under `clips/`), `sentence` (its transcript) and `client_id` (the
speaker, so `trainer.data.references` pairs each target with another clip of the same contributor). MP3 decodes
through libsndfile (1.1 and later), like every other format. Lines are split at tabs, not parsed as CSV: the
sentences hold quotes that a CSV reader would take for quoting.
"""

from __future__ import annotations

import os

from trainer.data.pairs import pair_candidate
from trainer.data.samples import Candidate

TABLES = ("validated.tsv", "train.tsv")
COLUMNS = ("path", "sentence", "client_id")


def table_of(directory: str) -> str | None:
    """The TSV this export trains from: validated.tsv, else train.tsv, else None."""
    return next((os.path.join(directory, t) for t in TABLES if os.path.isfile(os.path.join(directory, t))), None)


def read_commonvoice(path: str, system_prompt: str) -> list[Candidate]:
    """One candidate per data line of the table (a directory's validated.tsv/train.tsv, or a .tsv given)."""
    table = path if os.path.isfile(path) else table_of(path)
    assert table is not None
    clips = os.path.join(os.path.dirname(os.path.abspath(table)), "clips")
    candidates = []
    with open(table, "rb") as f:
        header: list[str] | None = None
        missing: list[str] = []
        for lineno, raw in enumerate(f, start=1):
            source = f"{table}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                if header is not None:
                    candidates.append(Candidate(source, [f"line is not UTF-8 text: {err}"]))
                    continue
                line = ""
            if header is None:
                header = line.split("\t")
                missing = [c for c in COLUMNS if c not in header]
                continue
            if not line.strip():
                continue
            fields = line.split("\t")
            if missing:
                candidates.append(Candidate(source, [
                    f"the header (line 1) has no column {', '.join(repr(c) for c in missing)}; "
                    f"expected {', '.join(COLUMNS)}"]))
            elif len(fields) != len(header):
                candidates.append(Candidate(source, [
                    f"expected {len(header)} tab-separated fields as in the header (line 1), got {len(fields)}"]))
            else:
                row = dict(zip(header, fields, strict=True))
                candidates.append(_row(row, clips, source, system_prompt))
    return candidates


def _row(row: dict[str, str], clips: str, source: str, system_prompt: str) -> Candidate:
    problems: list[str] = []
    name, text, speaker = row["path"].strip(), row["sentence"].strip(), row["client_id"].strip()
    if not name:
        problems.append("empty field 'path'")
    if not text:
        problems.append("empty field 'sentence'")
    audio = os.path.join(clips, name) if name else None
    sample_id = os.path.splitext(name)[0]
    return pair_candidate(source, problems, sample_id, system_prompt, text or None, audio, speaker=speaker or None)
