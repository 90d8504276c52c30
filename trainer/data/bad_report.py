"""The bad-sample report of a large dataset: complete, yet bounded on the console.

Up to `LIST_LIMIT` bad samples are listed one a line (`trainer.data.load.format_bad_samples`). Beyond that a
console line per bad sample would bury the run's log under a million lines, so the report counts the bad samples
per kind of problem and shows the first few of each kind, and the full list, one `source: reason` a line, goes to
a file (`bad_samples.txt` in OUTPUT_DIR), so that nothing is lost and a user still fixes a dataset in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from trainer.data.samples import BadSample

LIST_LIMIT = 50  # bad samples listed in full on the console
PER_KIND = 5  # examples shown per kind of problem beyond that
FILE_NAME = "bad_samples.txt"
_NUMBER = re.compile(r"\d+(\.\d+)?")


def problem_kind(reason: str) -> str:
    """What a reason says without its particulars, so that bad samples can be counted by kind.

    Its first problem, up to the path or value after `: `, with every number as N (`clip is N s, over
    --max_audio_seconds N`, `audio file not found`).
    """
    first = reason.split("; ", 1)[0]
    head = first.split(": ", 1)[0]
    return _NUMBER.sub("N", head)


def write_bad_samples(bad: Iterable[BadSample], path: Path) -> None:
    """Every bad sample, `source: reason` a line, written to `path` (replaced whole)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for b in bad:
            f.write(f"{b}\n")
    tmp.replace(path)


def summarize_bad_samples(bad: list[BadSample], full_list: Path | None, per_kind: int = PER_KIND) -> str:
    """Counts per kind of problem, so a million bad samples still make a report one can read.

    Most frequent kind first, each with its first `per_kind` samples, and where the full list is.

    Args:
        bad (`list[BadSample]`):
            Every bad sample, in input order.
        full_list (`Path | None`):
            The file that holds the full list (`write_bad_samples`), named in the report; None: not written.
        per_kind (`int`):
            Examples shown per kind.

    Returns:
        The report, one line per count and per example.
    """
    kinds: dict[str, list[BadSample]] = {}
    counts: dict[str, int] = {}
    for b in bad:
        kind = problem_kind(b.reason)
        counts[kind] = counts.get(kind, 0) + 1
        shown = kinds.setdefault(kind, [])
        if len(shown) < per_kind:
            shown.append(b)
    lines = [f"{len(bad)} bad samples, {len(counts)} kind{'' if len(counts) == 1 else 's'} of problem"
             + (f" (the full list: {full_list}):" if full_list is not None else ":")]
    for kind, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {count} x {kind}, the first {len(kinds[kind])}:")
        lines += [f"    {b}" for b in kinds[kind]]
    return "\n".join(lines)
