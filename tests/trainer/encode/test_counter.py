"""`Counter`: plain lines in a log, and what `prepare` shows while it reads and encodes the bundled speech."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

from tests.conftest import DEMO_DATA, clean_env, to_argv
from trainer.encode.counter import Counter

LINE = r"(\d+)/(\d+) {unit}s(?:, [\d.e+-]+ {unit}s/s, eta (\d+:\d\d:\d\d))?$"


def test_into_a_log_it_writes_the_start_each_interval_and_the_end(caplog) -> None:
    with (caplog.at_level(logging.INFO, logger="trainer.progress"),
          Counter(3, "encoding audio", "clip", stream=io.StringIO(), every_seconds=0.0) as counter):
        for _ in range(3):
            counter.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "encoding audio: 0/3 clips"
    assert [re.match("encoding audio: " + LINE.format(unit="clip"), line)[1] for line in lines] == ["0", "1", "2", "3"]
    assert lines[-1].endswith("eta 0:00:00")


def test_prepare_into_a_log_counts_the_files_it_reads_and_the_clips_it_encodes(base_args, tmp_path) -> None:
    files = sorted(p for p in (DEMO_DATA.parent / "audio").rglob("*") if p.is_file())
    args = base_args | {"cache_dir": str(tmp_path / "cache")}  # empty: every clip is encoded
    proc = subprocess.run([sys.executable, "-m", "trainer", "prepare", *to_argv(args)], env=clean_env(),
                          capture_output=True, text=True, timeout=300)  # stderr is a pipe: not a terminal
    assert proc.returncode == 0, proc.stderr[-3000:]
    progress = [line.split("trainer.progress: ", 1)[1] for line in proc.stderr.splitlines()
                if "trainer.progress: " in line]
    reading = [re.match("reading audio files: " + LINE.format(unit="file"), line) for line in progress
               if line.startswith("reading")]
    encoding = [re.match("encoding audio: " + LINE.format(unit="clip"), line) for line in progress
                if line.startswith("encoding")]
    assert reading and all(reading) and encoding and all(encoding), progress
    assert (reading[0][1], reading[-1][1], reading[-1][2]) == ("0", str(len(files)), str(len(files)))
    assert (encoding[0][1], encoding[-1][1], encoding[-1][2]) == ("0", "28", "28")  # 28 clips (the cache test)
    assert "\r" not in proc.stderr  # no bar redrawn into the log
