"""Data-parallel scaling on CPU: samples per second with 1 and 2 torchrun processes (gloo).

Runs the real CLI under torchrun on the benchmark model, through `ddp_probe.py` (`python -m trainer
train` plus a callback that reports the DDP settings the run used, read from its `TrainingArguments`
and its DDP-wrapped model). Both configurations get the same CPU cores in total (1 process x N threads
against 2 processes x N/2 threads), so the ratio shows what DDP's communication costs rather than how
many cores there are. Throughput is the trainer's own `samples_per_second` log (summed over ranks),
median over the steps after warm-up; the two configurations alternate over `--repeats` runs each (and
which goes first) and the ratio is of the medians.

    .venv/bin/python bench/bench_scaling.py [--steps 20] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import REPO, add_alternating_run_args, add_model_args, config, make_checkpoint


def run(ns: argparse.Namespace, nproc: int, threads: int, work: Path, model_dir: Path,
        codec_dir: Path) -> tuple[float, dict[str, Any]]:
    """(median samples/s, the DDP settings the run reported) of one `torchrun` training run."""
    cfg_values = {
        "MODEL_PATH": str(model_dir), "AUDIO_TOKENIZER_PATH": str(codec_dir),
        "TRAIN_DATA_FILE": str(REPO / "examples" / "demo_data" / "train.json"),
        "OUTPUT_DIR": str(work / f"scale-{nproc}"), "CACHE_DIR": str(work / "cache"), "USE_LORA": "false",
        "DISABLE_EVAL": "true", "MAX_STEPS": str(ns.steps), "SAVE_STEPS": "100000", "LOGGING_STEPS": "1",
        "PER_DEVICE_TRAIN_BATCH_SIZE": str(ns.batch_size), "DATALOADER_NUM_WORKERS": "0", "RESUME": "never",
        "WARMUP_STEPS": "0",
    }
    shutil.rmtree(cfg_values["OUTPUT_DIR"], ignore_errors=True)  # RESUME=never refuses an earlier run's checkpoints
    report = work / f"ddp-{nproc}.json"
    report.unlink(missing_ok=True)
    env = {**os.environ, **cfg_values, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "BENCH_DDP_REPORT": str(report)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(Path(__file__).with_name("ddp_probe.py"))], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    rates = [float(ast.literal_eval(line)["samples_per_second"]) for line in proc.stdout.splitlines()
             if line.startswith("{'loss'")]
    return statistics.median(rates[3:] if len(rates) > 5 else rates), json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_alternating_run_args(parser)
    ns = parser.parse_args()
    ns.steps = max(ns.steps, 10)
    work, model_dir, codec_dir = make_checkpoint(ns)
    config(ns, work, model_dir, codec_dir)  # validates the options once, in this process
    rates: dict[int, list[float]] = {1: [], 2: []}
    ddp: dict[int, dict[str, Any]] = {}
    for r in range(ns.repeats):
        for nproc in (1, 2) if r % 2 == 0 else (2, 1):
            rate, ddp[nproc] = run(ns, nproc, max(1, ns.threads // nproc), work, model_dir, codec_dir)
            rates[nproc].append(rate)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(json.dumps({
        "benchmark": "scaling", "device": "cpu", "backend": ddp[2]["backend"], "threads_total": ns.threads,
        "per_device_batch_size": ns.batch_size, "repeats": ns.repeats,
        "samples_per_second_1_process": round(one, 3), "samples_per_second_2_processes": round(two, 3),
        "ratio_2_vs_1": round(two / one, 3),
        "per_repeat": {"1_process": [round(x, 3) for x in rates[1]], "2_processes": [round(x, 3) for x in rates[2]]},
        "ddp": ddp[2], "ddp_1_process": ddp[1],
    }, indent=2))


if __name__ == "__main__":
    main()
