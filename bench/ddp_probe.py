"""`python -m trainer train` with one extra callback that records the DDP settings the run really used.

bench_scaling.py launches this under torchrun instead of `-m trainer train`: everything else is the real
CLI (`trainer.__main__.main`), but `trainer.commands.train.build` is wrapped so the trainer it returns also gets a
callback which, when training ends, writes `common.ddp_settings(trainer)` (read from the trainer's
`TrainingArguments` and its DDP-wrapped model) as JSON to the path in `$BENCH_DDP_REPORT` (rank 0 only).

    BENCH_DDP_REPORT=ddp.json torchrun --nproc_per_node=2 bench/ddp_probe.py [train flags]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from common import ddp_settings  # also puts the repository on sys.path


def report_callback(trainer: Any, path: Path) -> Any:
    """A TrainerCallback that writes the trainer's DDP settings to `path` at the end of training."""
    from transformers import TrainerCallback

    class _Report(TrainerCallback):
        def on_train_end(self, args, state, control, **kw):
            if args.process_index == 0:
                path.write_text(json.dumps(ddp_settings(trainer)))

    return _Report()


def main() -> int:
    import trainer.commands.train as run
    from trainer.__main__ import main as cli

    path, build = Path(os.environ["BENCH_DDP_REPORT"]), run.build

    def probed_build(cfg: Any) -> Any:
        trainer, tokenizer, resume = build(cfg)
        trainer.add_callback(report_callback(trainer, path))
        return trainer, tokenizer, resume

    run.build = probed_build  # `run.main` looks `build` up in its module when it runs
    return cli(["train", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
