"""`higgs-audio-trainer options`: the option table (flag, env var, default, meaning) as Markdown."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from trainer import errors
from trainer.config.cli import options_markdown


def run(argv: Sequence[str]) -> int:
    """`higgs-audio-trainer options`: the option table as Markdown on stdout, the source of docs/options.md."""
    sys.stdout.write(options_markdown())
    return errors.OK
