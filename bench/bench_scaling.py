"""Data-parallel scaling on CPU: samples per second with 1 and 2 torchrun processes (gloo).

Runs the real CLI (`torchrun -m trainer train`) on the benchmark model. Both configurations get the
same CPU cores in total (1 process x N threads against 2 processes x N/2 threads), so the ratio shows
what DDP's communication costs rather than how many cores there are. Throughput is the trainer's own
`samples_per_second` log (summed over ranks), median over the steps after warm-up. DDP settings:
`find_unused_parameters=False`, default 25 MB buckets, gradients all-reduced in backward.

    .venv/bin/python bench/bench_scaling.py [--steps 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys

from common import REPO, add_model_args, config, make_checkpoint


def run(ns: argparse.Namespace, nproc: int, threads: int, work, model_dir, codec_dir) -> float:
    cfg_values = {
        "MODEL_PATH": str(model_dir), "AUDIO_TOKENIZER_PATH": str(codec_dir),
        "TRAIN_DATA_FILE": str(REPO / "examples" / "demo_data" / "train.json"),
        "OUTPUT_DIR": str(work / f"scale-{nproc}"), "CACHE_DIR": str(work / "cache"), "USE_LORA": "false",
        "DISABLE_EVAL": "true", "MAX_STEPS": str(ns.steps), "SAVE_STEPS": "100000", "LOGGING_STEPS": "1",
        "PER_DEVICE_TRAIN_BATCH_SIZE": str(ns.batch_size), "DATALOADER_NUM_WORKERS": "0", "RESUME": "never",
        "WARMUP_STEPS": "0",
    }
    env = {**os.environ, **cfg_values, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "trainer", "train"], env=env, capture_output=True, text=True, cwd=REPO, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    rates = [float(ast.literal_eval(line)["samples_per_second"]) for line in proc.stdout.splitlines()
             if line.startswith("{'loss'")]
    return statistics.median(rates[3:] if len(rates) > 5 else rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads in total")
    ns = parser.parse_args()
    ns.steps = max(ns.steps, 10)
    work, model_dir, codec_dir = make_checkpoint(ns)
    config(ns, work, model_dir, codec_dir)  # validates the options once, in this process
    one = run(ns, 1, ns.threads, work, model_dir, codec_dir)
    two = run(ns, 2, max(1, ns.threads // 2), work, model_dir, codec_dir)
    print(json.dumps({
        "benchmark": "scaling", "device": "cpu", "backend": "gloo", "threads_total": ns.threads,
        "per_device_batch_size": ns.batch_size, "samples_per_second_1_process": round(one, 3),
        "samples_per_second_2_processes": round(two, 3), "ratio_2_vs_1": round(two / one, 3),
        "ddp": {"find_unused_parameters": False, "bucket_cap_mb": 25, "static_graph": False},
    }, indent=2))


if __name__ == "__main__":
    main()
