"""Shared set-up of the training benchmarks: a compute-bound model on the bundled speech.

The model is transformers' Higgs Audio v2 with random weights, big enough that a CPU step is dominated
by compute (hidden 512, 8 layers, 8 codebooks of 1024 codes by default); the audio tokenizer is the
tiny one (its codes only need the real shape). Flags scale it up on a GPU machine.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import socket
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


def add_alternating_run_args(parser: argparse.ArgumentParser) -> None:
    """The threads and repeats of a bench that runs whole configurations in turn, alternating their order."""
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads in total")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration, alternating")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hidden_size", type=int, default=512)
    parser.add_argument("--num_layers", type=int, default=8)
    parser.add_argument("--num_codebooks", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workdir", default=None, help="keep the checkpoint and cache here (default: a temp dir)")


def make_checkpoint(ns: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(workdir, model dir, audio tokenizer dir) of the benchmark model, built once per workdir.

    Without --workdir, one temporary directory serves the whole process (every call of a benchmark that
    measures several configurations) and is removed when it exits: a full-model checkpoint is hundreds of MB.
    """
    from trainer.model.tiny import build_tiny_checkpoint

    if not ns.workdir:
        ns.workdir = tempfile.mkdtemp(prefix="higgs-bench-")
        atexit.register(shutil.rmtree, ns.workdir, ignore_errors=True)
    work = Path(ns.workdir)
    key = f"h{ns.hidden_size}-l{ns.num_layers}-k{ns.num_codebooks}"
    ckpt = work / key
    if not (ckpt / "model" / "config.json").is_file():
        build_tiny_checkpoint(ckpt, hidden_size=ns.hidden_size, num_layers=ns.num_layers,
                              num_codebooks=ns.num_codebooks, codebook_size=1024, use_text_head=False)
    return work, ckpt / "model", ckpt / "audio_tokenizer"


def config(ns: argparse.Namespace, work: Path, model: Path, codec: Path, **over: str) -> Any:
    """The benchmark's options, in a fresh output directory: `--resume never` refuses one that holds the
    checkpoints of an earlier round or an earlier benchmark in the same --workdir."""
    from trainer.config.cli import parse_train_args

    shutil.rmtree(over.get("output_dir", work / "out"), ignore_errors=True)
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


_RESULT_OUT = sys.stdout  # where the result goes; everything else printed goes to stderr (`result_only_on_stdout`)


def result_only_on_stdout() -> None:
    """Send whatever else is printed (the Trainer's log line per step) to stderr, so that stdout carries the
    result alone and `bench_x.py > result.json` is valid JSON. Subprocesses keep their own stdout."""
    sys.stdout = sys.stderr


def print_result(result: dict[str, Any]) -> None:
    """Print the benchmark's result as JSON on the real stdout."""
    print(json.dumps(result, indent=2), file=_RESULT_OUT, flush=True)


def median_after_warmup(times: list[float], warmup: int = 3) -> float:
    return statistics.median(times[warmup:] if len(times) > warmup + 2 else times)


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nobody listens on now (the OS picks it), for a rendezvous or a server."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def join_single_process_group() -> None:
    """Set the variables `torchrun --nproc_per_node=1` sets, so that `TrainingArguments` starts a gloo process
    group of one and the Trainer wraps the model in DDP as it does in every multi-process run.

    Without them there is no process group and the Trainer trains the bare model: that would leave DDP's
    hooks and bucket all-reduce out of "our step". Variables already set (the bench run under torchrun) win.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) != 1:
        raise SystemExit("run this benchmark as one process (it compares against a single-process loop)")
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def ddp_settings(trainer: Any) -> dict[str, Any]:
    """The data-parallel settings a trainer really ran with, read from its `TrainingArguments` and from the
    wrapped model itself (not restated by hand, so a report cannot drift from what the code does).

    Read after `train()`: the Trainer wraps the model only then. The DDP fields are None when the model is
    not wrapped.
    """
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    args, model = trainer.args, trainer.model_wrapped
    ddp = model if isinstance(model, DistributedDataParallel) else None
    return {
        "wrapped": ddp is not None,
        "parallel_mode": args.parallel_mode.value,
        "world_size": args.world_size,
        "backend": tdist.get_backend() if tdist.is_initialized() else None,
        "training_args": {"ddp_find_unused_parameters": args.ddp_find_unused_parameters,
                          "ddp_bucket_cap_mb": args.ddp_bucket_cap_mb,
                          "ddp_broadcast_buffers": args.ddp_broadcast_buffers,
                          "ddp_static_graph": getattr(args, "ddp_static_graph", None)},
        "find_unused_parameters": ddp.find_unused_parameters if ddp else None,
        "bucket_cap_mb": ddp.bucket_bytes_cap / 2**20 if ddp else None,
        "static_graph": ddp.static_graph if ddp else None,
        "gradient_as_bucket_view": ddp.gradient_as_bucket_view if ddp else None,
        "broadcast_buffers": ddp.broadcast_buffers if ddp else None,
    }
