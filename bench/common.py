"""Shared set-up of the training benchmarks: a compute-bound model on the bundled speech.

The model is transformers' Higgs Audio v2 with random weights, big enough that a CPU step is dominated
by compute (hidden 512, 8 layers, 8 codebooks of 1024 codes by default); the audio tokenizer is the
tiny one (its codes only need the real shape). Flags scale it up on a GPU machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEMO = REPO / "examples" / "demo_data" / "train.json"


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hidden_size", type=int, default=512)
    parser.add_argument("--num_layers", type=int, default=8)
    parser.add_argument("--num_codebooks", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workdir", default=None, help="keep the checkpoint and cache here (default: a temp dir)")


def make_checkpoint(ns: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(workdir, model dir, audio tokenizer dir) of the benchmark model, built once per workdir."""
    from trainer.tiny import build_tiny_checkpoint

    work = Path(ns.workdir or tempfile.mkdtemp(prefix="higgs-bench-"))
    key = f"h{ns.hidden_size}-l{ns.num_layers}-k{ns.num_codebooks}"
    ckpt = work / key
    if not (ckpt / "model" / "config.json").is_file():
        build_tiny_checkpoint(ckpt, hidden_size=ns.hidden_size, num_layers=ns.num_layers,
                              num_codebooks=ns.num_codebooks, codebook_size=1024, use_text_head=False)
    return work, ckpt / "model", ckpt / "audio_tokenizer"


def config(ns: argparse.Namespace, work: Path, model: Path, codec: Path, **over: str) -> Any:
    from trainer.cli import parse_train_args

    values = {
        "model_path": str(model), "audio_tokenizer_path": str(codec), "train_data_file": str(DEMO),
        "output_dir": str(work / "out"), "cache_dir": str(work / "cache"), "use_lora": "false",
        "disable_eval": "true", "max_steps": str(ns.steps), "save_steps": "100000", "logging_steps": "100000",
        "per_device_train_batch_size": str(ns.batch_size), "dataloader_num_workers": "0", "warmup_steps": "0",
        "resume": "never", "log_level": "warning",
    } | over
    return parse_train_args([], {k.upper(): v for k, v in values.items()})


class StepClock:
    """A TrainerCallback source: the time of every step end (data, forward, backward, optimizer, callbacks:
    everything a step costs), and of the start of training.

    `sync`, when given, runs before each reading: `torch.cuda.synchronize` on a GPU, so that a step's time
    includes the kernels it queued.
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        from transformers import TrainerCallback

        begin: list[float] = []
        ends: list[float] = []

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                begin.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kw):
                if sync is not None:
                    sync()
                ends.append(time.perf_counter())

        self.begin, self.ends = begin, ends
        self.callback = _CB()

    def times(self) -> list[float]:
        """Seconds between consecutive step ends (the first step, which pays for warm-up, is not among them)."""
        return [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]

    def times_from_begin(self) -> list[float]:
        """Seconds of every step, the first counted from the start of training."""
        return [b - a for a, b in zip([*self.begin[:1], *self.ends], self.ends, strict=False)]


def median_after_warmup(times: list[float], warmup: int = 3) -> float:
    return statistics.median(times[warmup:] if len(times) > warmup + 2 else times)
