"""Checkpoint size and time: LoRA (adapter + what resuming needs) against a full-model checkpoint.

Both come from `HiggsAudioTrainer._save_checkpoint` on the benchmark model after a few optimizer steps
(so the optimizer state exists): everything a resume needs plus the completeness marker. Saving is
synchronous, so the save time is the training time lost per save; `steps_lost_per_save` expresses it in
training steps of the same run.

Issue 7 asks that a save block training no longer than writing the adapter takes. For LoRA the bench
also times writing the adapter alone (`PeftModel.save_pretrained`, as `_save` calls it, into a fresh
directory on the same filesystem), alternating with the full checkpoints, and prints
`lora_blocking_vs_adapter_only` = checkpoint seconds / adapter-only seconds (medians; 1.0 would mean the
rest of the resume state costs training nothing).

    .venv/bin/python bench/bench_checkpoint.py [--saves 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from common import StepClock, add_model_args, config, make_checkpoint, median_after_warmup


def save_checkpoint(trainer, out: Path) -> tuple[float, int, bool]:
    """Seconds `_save_checkpoint` blocks training, the checkpoint's bytes (a new directory each call), and
    whether it is already complete (marker written) when the call returns, i.e. the save is synchronous."""
    from trainer.checkpoint import dir_size, is_complete

    trainer.state.global_step += 1
    start = time.perf_counter()
    trainer._save_checkpoint(trainer.model, None)
    seconds = time.perf_counter() - start
    path = out / f"checkpoint-{trainer.state.global_step}"
    return seconds, dir_size(path), is_complete(path)


def save_adapter_only(trainer, target: Path) -> float:
    """Seconds to write the LoRA adapter alone, the way `_save` writes it, into a fresh `target`."""
    shutil.rmtree(target, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    start = time.perf_counter()
    model.save_pretrained(str(target), safe_serialization=True)
    return time.perf_counter() - start


def measure(ns: argparse.Namespace, lora: bool) -> dict[str, Any]:
    """Train a few steps, then save `--saves` checkpoints (LoRA: alternating with adapter-only writes)."""
    from trainer.checkpoint import dir_size
    from trainer.run import build

    work, model_dir, codec_dir = make_checkpoint(ns)
    out = work / ("out-lora" if lora else "out-full")
    cfg = config(ns, work, model_dir, codec_dir, use_lora=str(lora).lower(), output_dir=str(out),
                 save_total_limit="0")
    trainer, _, _ = build(cfg)
    clock = StepClock()
    trainer.add_callback(clock.callback)
    trainer.train()
    step = median_after_warmup(clock.times())
    times, sizes, complete, adapter_times = [], [], [], []
    for i in range(ns.saves):
        if lora and i % 2 == 1:
            adapter_times.append(save_adapter_only(trainer, work / "adapter-only"))
        seconds, size, done = save_checkpoint(trainer, out)
        times.append(seconds)
        sizes.append(size)
        complete.append(done)
        if lora and i % 2 == 0:
            adapter_times.append(save_adapter_only(trainer, work / "adapter-only"))
    adapter = out / f"checkpoint-{trainer.state.global_step}" / "lora_adapters"
    result = {"save_seconds": statistics.median(times), "bytes": statistics.median(sizes),
              "adapter_bytes": dir_size(adapter) if adapter.is_dir() else 0, "step_seconds": step,
              "save_seconds_each": times, "complete_on_return": all(complete)}
    if lora:
        result |= {"adapter_only_seconds": statistics.median(adapter_times), "adapter_only_seconds_each": adapter_times}
    return result


def rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: [round(x, 4) for x in v] if isinstance(v, list) else v if isinstance(v, bool) else round(v, 4)
            for k, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--saves", type=int, default=5)
    ns = parser.parse_args()
    ns.steps = max(ns.steps, 6)
    lora, full = measure(ns, True), measure(ns, False)
    print(json.dumps({
        "benchmark": "checkpoint", "model_hidden_size": ns.hidden_size, "layers": ns.num_layers,
        "lora": rounded(lora), "full": rounded(full),
        "size_ratio_lora_vs_full": round(lora["bytes"] / full["bytes"], 4),
        "time_ratio_lora_vs_full": round(lora["save_seconds"] / full["save_seconds"], 4),
        "save_is_synchronous": lora["complete_on_return"] and full["complete_on_return"],
        "lora_blocking_vs_adapter_only": round(lora["save_seconds"] / lora["adapter_only_seconds"], 2),
        "lora_blocking_vs_adapter_only_each": [round(s / a, 2) for s, a in zip(
            lora["save_seconds_each"], lora["adapter_only_seconds_each"], strict=True)],
        "steps_lost_per_save": {"lora": round(lora["save_seconds"] / lora["step_seconds"], 2),
                                "full": round(full["save_seconds"] / full["step_seconds"], 2)},
    }, indent=2))


if __name__ == "__main__":
    main()
