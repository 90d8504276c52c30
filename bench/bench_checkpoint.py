"""Checkpoint size and time: LoRA (adapter + what resuming needs) against a full-model checkpoint, and the
training time a save takes away.

Every checkpoint comes from the Trainer's `_save_checkpoint` with `HiggsAudioTrainer`'s checkpoint writer,
on the benchmark model after a few optimizer steps (so the optimizer state exists): everything a resume
needs plus the completeness marker.
A LoRA save with `--async_save` (the default) blocks training only while the adapter is written; the
optimizer and scheduler state, the marker and rotation follow on a background thread. The bench times
both: `blocking_seconds` (training waits) and `complete_seconds` (until the marker, waited for at once).

Issue 7 asks that a save block training no longer than writing the adapter takes. The bench also times
writing the adapter alone (`PeftModel.save_pretrained`, as `_save` calls it, into a fresh directory on
the same filesystem), alternating with the checkpoints, and prints `lora_blocking_vs_adapter_only` =
blocking seconds / adapter-only seconds (medians). The same run measures the synchronous LoRA save
(`--async_save false`) and the full-model save as baselines; the full-model save both ways too (with
`--async_save` it writes while training waits and only flushes to stable storage and writes the marker on
the thread).

A background write still uses the machine: on a CPU box it competes with training for the cores. So
the bench also trains `--train_steps` steps with a save every `--every` steps, asynchronous, synchronous
and with no save at all (rounds alternating), and reports the training time lost per save against the
run without saves.

Each timed save starts with the disk's write-back drained (`os.sync()` before it, outside the timing):
otherwise a full-model save (hundreds of MB) waits on the dirty pages of the one before, and back-to-back
saves grow slower with the host's write-back (1.0-1.7 s against 0.5 s seen). The spread over the saves is
printed with each median (`*_seconds_range`).

    .venv/bin/python bench/bench_checkpoint.py [--saves 6] [--train_steps 24 --every 2 --rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from common import (
    StepClock,
    add_model_args,
    config,
    make_checkpoint,
    median_after_warmup,
    print_result,
    result_only_on_stdout,
)


def save_checkpoint(trainer, out: Path) -> tuple[float, float, int, bool]:
    """Seconds a save blocks training (the writer's `begin`, the Trainer's `_save_checkpoint`, the writer's
    `on_save`: what a step end that saves runs), seconds until the checkpoint is complete (its background
    write waited for right away), its bytes (a new directory each call), and whether it was already complete
    when the save returned (a synchronous save)."""
    from trainer.train.checkpoint import dir_size, is_complete

    trainer.state.global_step += 1
    path = out / f"checkpoint-{trainer.state.global_step}"
    os.sync()  # the earlier saves' dirty pages are on disk: each save pays for its own write-back only
    start = time.perf_counter()
    trainer.checkpoints.begin()
    trainer._save_checkpoint(trainer.model, None)
    trainer.checkpoints.on_save(trainer.args, trainer.state, trainer.control)
    blocking = time.perf_counter() - start
    complete_on_return = is_complete(path)
    trainer.finish_pending_save()
    complete = time.perf_counter() - start
    assert is_complete(path), f"{path} has no completeness marker after the save"
    return blocking, complete, dir_size(path), complete_on_return


def save_adapter_only(trainer, target: Path) -> float:
    """Seconds to write the LoRA adapter alone, the way `_save` writes it, into a fresh `target`."""
    shutil.rmtree(target, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    start = time.perf_counter()
    model.save_pretrained(str(target), safe_serialization=True)
    return time.perf_counter() - start


def measure(ns: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Train a few steps, then save `--saves` checkpoints of `kind` (lora, lora_sync, full or full_sync); LoRA
    saves alternate with adapter-only writes."""
    from trainer.commands.train import build
    from trainer.train.checkpoint import dir_size

    lora, background = kind.startswith("lora"), not kind.endswith("_sync")
    work, model_dir, codec_dir = make_checkpoint(ns)
    out = work / f"out-{kind}"
    cfg = config(ns, work, model_dir, codec_dir, use_lora=str(lora).lower(), output_dir=str(out),
                 save_total_limit="0", async_save=str(background).lower(), lora_rank=str(ns.lora_rank))
    trainer, _, _ = build(cfg)
    assert trainer.saves_in_background == background
    clock = StepClock()
    trainer.add_callback(clock.callback)
    trainer.train()
    step = median_after_warmup(clock.times())
    blocking, complete, sizes, on_return, adapter_times = [], [], [], [], []
    for i in range(ns.saves):
        if lora and i % 2 == 1:
            adapter_times.append(save_adapter_only(trainer, work / "adapter-only"))
        seconds, done_seconds, size, done = save_checkpoint(trainer, out)
        blocking.append(seconds)
        complete.append(done_seconds)
        sizes.append(size)
        on_return.append(done)
        if lora and i % 2 == 0:
            adapter_times.append(save_adapter_only(trainer, work / "adapter-only"))
    adapter = out / f"checkpoint-{trainer.state.global_step}" / "lora_adapters"
    result = {"blocking_seconds": statistics.median(blocking), "complete_seconds": statistics.median(complete),
              "bytes": statistics.median(sizes), "adapter_bytes": dir_size(adapter) if adapter.is_dir() else 0,
              "step_seconds": step, "blocking_seconds_each": blocking, "complete_on_return": all(on_return),
              "blocking_seconds_range": [min(blocking), max(blocking)],
              "complete_seconds_range": [min(complete), max(complete)]}
    if lora:
        result |= {"adapter_only_seconds": statistics.median(adapter_times), "adapter_only_seconds_each": adapter_times}
    shutil.rmtree(out)  # full-model checkpoints are hundreds of MB each
    return result


def train_with_saves(ns: argparse.Namespace, mode: str) -> float:
    """Seconds per step of `--train_steps` LoRA steps with a save every `--every` steps (mode async or sync),
    or with none (mode none): the time from the first step's end to the last, so that set-up is left out."""
    from trainer.commands.train import build

    work, model_dir, codec_dir = make_checkpoint(ns)
    every = str(ns.every if mode != "none" else 100_000)
    cfg = config(ns, work, model_dir, codec_dir, use_lora="true", output_dir=str(work / f"train-{mode}"),
                 max_steps=str(ns.train_steps), save_steps=every, save_total_limit="2",
                 async_save=str(mode == "async").lower(), lora_rank=str(ns.lora_rank))
    trainer, _, _ = build(cfg)
    clock = StepClock()
    trainer.add_callback(clock.callback)
    trainer.train()
    shutil.rmtree(cfg.train.output_dir)
    ends = clock.ends  # the save at a step comes after its step end: the last save falls outside the window
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: [round(x, 4) for x in v] if isinstance(v, list) else v if isinstance(v, bool) else round(v, 4)
            for k, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--saves", type=int, default=6)
    parser.add_argument("--train_steps", type=int, default=24)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lora_rank", type=int, default=16, help="LoRA rank: the resume state grows with it")
    ns = parser.parse_args()
    result_only_on_stdout()
    ns.steps = max(ns.steps, 6)
    lora, lora_sync = measure(ns, "lora"), measure(ns, "lora_sync")
    full, full_sync = measure(ns, "full"), measure(ns, "full_sync")
    per_step: dict[str, list[float]] = {"async": [], "sync": [], "none": []}
    for _ in range(ns.rounds):
        for mode in per_step:
            per_step[mode].append(train_with_saves(ns, mode))
    step = {mode: statistics.median(v) for mode, v in per_step.items()}
    intervals = ns.train_steps - 1
    saves = intervals // ns.every  # the saves between the first step end and the last
    lost = {mode: (step[mode] - step["none"]) * intervals / saves / step["none"] for mode in ("async", "sync")}
    print_result({
        "benchmark": "checkpoint", "model_hidden_size": ns.hidden_size, "layers": ns.num_layers,
        "lora_rank": ns.lora_rank,
        "lora": rounded(lora), "lora_sync": rounded(lora_sync), "full": rounded(full), "full_sync": rounded(full_sync),
        "size_ratio_lora_vs_full": round(lora["bytes"] / full["bytes"], 4),
        "sync_saves_complete_on_return": lora_sync["complete_on_return"] and full_sync["complete_on_return"],
        "lora_blocking_vs_adapter_only": round(lora["blocking_seconds"] / lora["adapter_only_seconds"], 2),
        "lora_blocking_vs_adapter_only_each": [round(s / a, 2) for s, a in zip(
            lora["blocking_seconds_each"], lora["adapter_only_seconds_each"], strict=True)],
        "lora_sync_blocking_vs_adapter_only": round(
            lora_sync["blocking_seconds"] / lora_sync["adapter_only_seconds"], 2),
        "lora_async_vs_sync_blocking": round(lora["blocking_seconds"] / lora_sync["blocking_seconds"], 2),
        "full_async_vs_sync_blocking": round(full["blocking_seconds"] / full_sync["blocking_seconds"], 2),
        "steps_lost_per_save_blocking": {name: round(r["blocking_seconds"] / r["step_seconds"], 3) for name, r in (
            ("lora", lora), ("lora_sync", lora_sync), ("full", full), ("full_sync", full_sync))},
        "training_with_saves": {"every": ns.every, "steps": ns.train_steps,
                                "seconds_per_step": {m: [round(x, 4) for x in v] for m, v in per_step.items()},
                                "steps_lost_per_save": {m: round(v, 3) for m, v in lost.items()}},
    })


if __name__ == "__main__":
    main()
