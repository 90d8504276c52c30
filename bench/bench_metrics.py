"""Cost of the metrics on training step time: the same tiny CPU run without and with `MetricsCallback`.

Variants, interleaved over `--repeats` rounds so that machine noise hits them alike:
- `none`: no metrics callback;
- `offline`: the callback with nothing to send (values set, no thread);
- `gateway_up`: pushing to a real Pushgateway (Debian's `prometheus-pushgateway`, on a free loopback port);
- `gateway_hanging`: pushing to a loopback socket that accepts connections and never answers.

A step's time is the gap between two `on_step_end` events; the callback's own time is what its event
handlers take on the training thread, the most direct measure (steps of a 1-2 ms model vary by 10% from
run to run on a shared machine, so the ratios of whole runs carry that noise; medians carry less).
The pusher's own thread is measured too: its CPU time (the thread's CPU clock, from its start to the end
of training) per step and as a share of that wall time, so that a pusher that burns CPU shows although it
never runs on the training thread. `finish_seconds` is the final push at exit (retried against a hanging
gateway), against the bound `Pusher.finish_budget` states for it (`finish_bound_seconds`: with the 1 s
timeout, 15 s for rank 0 of a successful run). Logging every step (`--logging_steps 1`) and pushing every
`--push_interval` seconds make this a worst case. Prints one JSON object; ratios are relative to `none`
from the same run.

Targets, for every variant with metrics: the callback's handlers under `--max_callback_share` of a step
(1%), the pusher thread's CPU under `--max_pusher_share` of the wall time (5%), and the final push's
wait within its bound. Missed, the bench prints its result and exits 1.

    .venv/bin/python bench/bench_metrics.py [--steps 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import StepClock, free_port  # also puts the repository on sys.path
from torch import nn
from transformers import PrinterCallback, Trainer, TrainingArguments

from trainer.config.options import MetricsArgs
from trainer.metrics.callback import MetricsCallback

LOOPBACK = "127.0.0.1"
EVENTS = ("on_train_begin", "on_step_end", "on_log", "on_prediction_step")


class TinyModel(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 8))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.cross_entropy(self.net(x), labels)}


def time_handlers(callback: MetricsCallback, spent: list[float]) -> None:
    """Wrap the callback's event handlers so that their time adds up in `spent[0]`."""
    for event in EVENTS:
        method = getattr(callback, event)

        def timed(*args: Any, _method: Callable[..., Any] = method, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        setattr(callback, event, timed)


def start_gateway(workdir: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        return None
    port = free_port(LOOPBACK)
    process = subprocess.Popen([binary, f"--web.listen-address={LOOPBACK}:{port}", "--persistence.file=",
                                "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=workdir)
    url = f"http://{LOOPBACK}:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/-/ready", timeout=1).close()
            return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the Pushgateway did not start")


def run_once(args: argparse.Namespace, workdir: Path, url: str | None, with_metrics: bool
             ) -> dict[str, float]:
    """One training run: its mean and median step time, the callback's time per step, `finish` time."""
    torch.manual_seed(0)
    data = [{"x": torch.randn(args.width), "labels": torch.randint(0, 8, ())} for _ in range(args.batch * 8)]
    clock, spent, callbacks = StepClock(), [0.0], []  # the clock's times: every step end
    metrics: MetricsCallback | None = None
    pusher_start = time.perf_counter()
    if with_metrics:
        options = MetricsArgs(pushgateway_url=url, metrics_push_interval_seconds=args.push_interval,
                              metrics_push_timeout_seconds=args.push_timeout)
        metrics = MetricsCallback(options, f"bench-{time.time_ns()}")
        time_handlers(metrics, spent)
        callbacks.append(metrics)
    training = TrainingArguments(
        output_dir=str(workdir / "out"), max_steps=args.steps, per_device_train_batch_size=args.batch,
        logging_steps=args.logging_steps, save_strategy="no", eval_strategy="no", report_to="none",
        use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0, remove_unused_columns=False,
    )
    trainer = Trainer(model=TinyModel(args.width), args=training, train_dataset=data,
                      callbacks=[clock.callback, *callbacks])
    trainer.remove_callback(PrinterCallback)  # keeps stdout for the JSON
    trainer.train()
    pusher_cpu, pusher_wall, bound = pusher_usage(metrics, pusher_start)
    started = time.perf_counter()
    if metrics is not None:
        metrics.finish("succeeded")
    finish = time.perf_counter() - started
    steps = clock.times()[10:]  # after warm-up
    return {"mean": statistics.fmean(steps), "median": statistics.median(steps),
            "callback": spent[0] / args.steps, "finish": finish, "pusher_cpu": pusher_cpu / args.steps,
            "pusher_share": pusher_cpu / pusher_wall, "finish_bound": bound}


def pusher_usage(metrics: MetricsCallback | None, started: float) -> tuple[float, float, float]:
    """(CPU seconds of the pusher's thread since it started, wall seconds since then, the most `finish` may
    wait): read before `finish`, while the thread still runs. Zeros without a pusher."""
    pusher = metrics._pusher if metrics is not None else None  # the callback's own pusher: no public handle
    if pusher is None:
        return 0.0, 1.0, 0.0
    cpu = time.clock_gettime(time.pthread_getcpuclockid(pusher._thread.ident))
    # rank 0 of a successful run: its groups and the last-success group, no delete (the default)
    return cpu, time.perf_counter() - started, pusher.finish_budget(len(pusher.groups) + 1, delete=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--logging_steps", type=int, default=1)
    parser.add_argument("--push_interval", type=float, default=0.5)
    parser.add_argument("--push_timeout", type=float, default=1.0)
    parser.add_argument("--max_callback_share", type=float, default=0.01,
                        help="target: the callback's handler time per step, as a share of a step without metrics")
    parser.add_argument("--max_pusher_share", type=float, default=0.05,
                        help="target: the pusher thread's CPU time as a share of the wall time it ran")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        gateway = start_gateway(workdir)
        hanging = socket.socket()
        hanging.bind((LOOPBACK, 0))
        hanging.listen(128)  # connections complete in the kernel; nobody ever answers
        variants: dict[str, tuple[str | None, bool]] = {
            "none": (None, False),
            "offline": (None, True),
            "gateway_hanging": (f"http://{LOOPBACK}:{hanging.getsockname()[1]}", True),
        }
        if gateway:
            variants["gateway_up"] = (gateway[1], True)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        try:
            names = list(variants)
            for round_ in range(args.repeats):  # a different variant goes first in each round
                for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                    url, with_metrics = variants[name]
                    runs[name].append(run_once(args, workdir, url, with_metrics))
        finally:
            hanging.close()
            if gateway:
                gateway[0].terminate()
                gateway[0].wait()
    def over_runs(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    result: dict[str, Any] = {
        "device": "cpu", "torch_threads": 1, "steps": args.steps, "repeats": args.repeats,
        "logging_steps": args.logging_steps, "push_interval_seconds": args.push_interval,
        "push_timeout_seconds": args.push_timeout, "gateway_up_measured": gateway is not None,
    }
    for name in runs:
        callback = over_runs(name, "callback")
        result[name] = {
            "step_ms_median": round(over_runs(name, "median") * 1e3, 4),
            "step_ms_mean": round(over_runs(name, "mean") * 1e3, 4),
            "ratio_median_to_none": round(over_runs(name, "median") / over_runs("none", "median"), 4),
            "ratio_mean_to_none": round(over_runs(name, "mean") / over_runs("none", "mean"), 4),
            "callback_us_per_step": round(callback * 1e6, 2),
            "callback_share_of_step": round(callback / over_runs("none", "median"), 5),
            "finish_seconds": round(over_runs(name, "finish"), 3),
            "finish_seconds_max": round(max(r["finish"] for r in runs[name]), 3),
            "finish_bound_seconds": round(over_runs(name, "finish_bound"), 3),
            "pusher_cpu_us_per_step": round(over_runs(name, "pusher_cpu") * 1e6, 2),
            "pusher_cpu_share_of_wall": round(over_runs(name, "pusher_share"), 5),
        }
    missed = [f"{name}: {what}" for name in runs if name != "none" for what, bad in (
        ("callback share", result[name]["callback_share_of_step"] > args.max_callback_share),
        ("pusher CPU share", result[name]["pusher_cpu_share_of_wall"] > args.max_pusher_share),
        ("final push over its bound", any(r["finish"] > r["finish_bound"] for r in runs[name] if r["finish_bound"])),
    ) if bad]
    result["target"] = {"max_callback_share": args.max_callback_share, "max_pusher_share": args.max_pusher_share,
                        "finish_within_bound": True, "missed": missed, "met": not missed}
    print(json.dumps(result, indent=2))
    if missed:
        raise SystemExit(f"target missed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
