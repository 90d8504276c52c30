"""Checkpoint size and time: LoRA (adapter + what resuming needs) against a full-model checkpoint.

Both come from `HiggsAudioTrainer._save_checkpoint` on the benchmark model after a few optimizer steps
(so the optimizer state exists): everything a resume needs plus the completeness marker. Saving is
synchronous, so the save time is the training time lost per save; `steps_lost_per_save` expresses it in
training steps of the same run.

    .venv/bin/python bench/bench_checkpoint.py [--saves 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from common import StepClock, add_model_args, config, make_checkpoint, median_after_warmup


def measure(ns: argparse.Namespace, lora: bool) -> dict[str, float]:
    from trainer.checkpoint import dir_size
    from trainer.run import build

    work, model_dir, codec_dir = make_checkpoint(ns)
    out = work / ("out-lora" if lora else "out-full")
    shutil.rmtree(out, ignore_errors=True)
    cfg = config(ns, work, model_dir, codec_dir, use_lora=str(lora).lower(), output_dir=str(out),
                 save_total_limit="0")
    trainer, _, _ = build(cfg)
    clock = StepClock()
    trainer.add_callback(clock.callback)
    trainer.train()
    step = median_after_warmup(clock.times())
    times, sizes = [], []
    for i in range(ns.saves):
        trainer.state.global_step += 1  # a new checkpoint directory each time
        start = time.perf_counter()
        trainer._save_checkpoint(trainer.model, None)
        times.append(time.perf_counter() - start)
        sizes.append(dir_size(Path(out) / f"checkpoint-{trainer.state.global_step}"))
        del i
    adapter = Path(out) / f"checkpoint-{trainer.state.global_step}" / "lora_adapters"
    return {"save_seconds": statistics.median(times), "bytes": statistics.median(sizes),
            "adapter_bytes": dir_size(adapter) if adapter.is_dir() else 0, "step_seconds": step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--saves", type=int, default=3)
    ns = parser.parse_args()
    ns.steps = max(ns.steps, 6)
    lora, full = measure(ns, True), measure(ns, False)
    print(json.dumps({
        "benchmark": "checkpoint", "model_hidden_size": ns.hidden_size, "layers": ns.num_layers,
        "lora": {k: round(v, 4) for k, v in lora.items()}, "full": {k: round(v, 4) for k, v in full.items()},
        "size_ratio_lora_vs_full": round(lora["bytes"] / full["bytes"], 4),
        "time_ratio_lora_vs_full": round(lora["save_seconds"] / full["save_seconds"], 4),
        "steps_lost_per_save": {"lora": round(lora["save_seconds"] / lora["step_seconds"], 2),
                                "full": round(full["save_seconds"] / full["step_seconds"], 2)},
    }, indent=2))


if __name__ == "__main__":
    main()
