"""`higgs-audio-trainer options`: the option table (flag, env var, default, meaning) as Markdown."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from trainer import errors
from trainer.config.cli import options_markdown


def run(argv: Sequence[str]) -> int:
    sys.stdout.write(options_markdown())
    return errors.OK
