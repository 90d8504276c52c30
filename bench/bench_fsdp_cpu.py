"""FSDP against DDP on two CPU processes (gloo): step time and losses of the same full fine-tuning run.

Runs the real CLI (`python -m trainer train` under torchrun, 2 processes) on the benchmark model, once with
`--fsdp false` (DDP, the baseline) and once with `--fsdp true`, alternating over `--repeats` runs each (and
which goes first). Step time is the trainer's own `step_seconds` log, median over the steps after warm-up;
the ratio is FSDP's median over DDP's. The losses of every step come from each run's `trainer_state.json`
(full precision), and the largest difference between the two runs is reported: FSDP shards the weights,
it must not change what is learned.

    .venv/bin/python bench/bench_fsdp_cpu.py [--steps 20] [--repeats 2] [--hidden_size 512] [--num_layers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from common import (
    DEMO,
    REPO,
    add_alternating_run_args,
    add_model_args,
    make_checkpoint,
    median_after_warmup,
    print_result,
)


def run(ns: argparse.Namespace, fsdp: bool, work: Path, model_dir: Path, codec_dir: Path) -> tuple[float, list[float]]:
    """(median step seconds after warm-up, loss of every step) of one two-process training run."""
    out = work / ("fsdp" if fsdp else "ddp")
    shutil.rmtree(out, ignore_errors=True)
    values = {
        "MODEL_PATH": str(model_dir), "AUDIO_TOKENIZER_PATH": str(codec_dir), "TRAIN_DATA_FILE": str(DEMO),
        "OUTPUT_DIR": str(out), "CACHE_DIR": str(work / "cache"), "USE_LORA": "false", "DISABLE_EVAL": "true",
        "MAX_STEPS": str(ns.steps), "SAVE_STEPS": str(ns.steps), "LOGGING_STEPS": "1", "WARMUP_STEPS": "0",
        "PER_DEVICE_TRAIN_BATCH_SIZE": str(ns.batch_size), "DATALOADER_NUM_WORKERS": "0", "RESUME": "never",
        "SEED": "1", "FSDP": "true" if fsdp else "false",
    }
    env = {**os.environ, **values, "OMP_NUM_THREADS": str(max(1, ns.threads // 2)), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "trainer", "train"], env=env, capture_output=True, text=True, cwd=REPO, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    state = json.loads((out / f"checkpoint-{ns.steps}" / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "loss" in h]
    return median_after_warmup([h["step_seconds"] for h in logs]), [h["loss"] for h in logs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_alternating_run_args(parser)
    ns = parser.parse_args()
    work, model_dir, codec_dir = make_checkpoint(ns)
    times: dict[bool, list[float]] = {False: [], True: []}
    losses: dict[bool, list[float]] = {}
    for r in range(ns.repeats):
        for fsdp in (False, True) if r % 2 == 0 else (True, False):
            seconds, losses[fsdp] = run(ns, fsdp, work, model_dir, codec_dir)
            times[fsdp].append(seconds)
    ddp, fsdp = statistics.median(times[False]), statistics.median(times[True])
    pairs = list(zip(losses[False], losses[True], strict=True))
    gap = max(abs(a - b) for a, b in pairs)
    relative = max(abs(a - b) / abs(a) for a, b in pairs)  # fp32 sums in another order differ by ~1e-7 of the value
    print_result({
        "benchmark": "fsdp_vs_ddp_cpu", "device": "cpu", "backend": "gloo", "processes": 2,
        "threads_total": ns.threads, "model": {"hidden_size": ns.hidden_size, "layers": ns.num_layers,
                                                 "codebooks": ns.num_codebooks},
        "per_device_batch_size": ns.batch_size, "steps": ns.steps, "repeats": ns.repeats,
        "step_seconds_ddp": round(ddp, 4), "step_seconds_fsdp": round(fsdp, 4),
        "ratio_fsdp_vs_ddp": round(fsdp / ddp, 3),
        "per_repeat": {"ddp": [round(x, 4) for x in times[False]], "fsdp": [round(x, 4) for x in times[True]]},
        "losses_max_abs_difference": gap, "losses_max_relative_difference": relative,
        "losses_equal_within_1e-5": gap <= 1e-5,
        "final_loss": {"ddp": losses[False][-1], "fsdp": losses[True][-1]},
    })


if __name__ == "__main__":
    main()
