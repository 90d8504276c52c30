"""Corpus scale: `prepare` and the start of `train` at 10k, 100k and 1M samples, with the dataset index and without.

The dataset: `N` samples in the seed scripts' ChatML layout (`tests/trainer/datafiles.py`'s `seed_sample`) that
reference 200 distinct one-second clips of the bundled speech, so that encoding is not the cost: the code cache is
filled once, untimed, before the first size. The model is the tests' tiny random checkpoint (its start-up, not its
step, is what is measured).

Per size, each command a separate process (`python -m trainer ...`), its peak RSS read from `/proc/PID/status`
(VmHWM, polled every 0.1 s, of every process of the command: for `torchrun`, the largest rank):

- `prepare`: wall time, samples per second (N / wall, start-up included), peak RSS, the index's size on disk
  and the rendered parts' (`trainer.encode.part_store`); with the index, then `prepare` again after 1% more
  samples are appended to the same file (`full_over_append`: the full build's time over the rebuild's);
- `train` with a current index, 1 process and 2 (`torchrun`, gloo): wall time to the end of the first step
  (`--max_steps 1`; the tiny adapter's save after it is a fraction of a second), peak RSS per rank;
- the baseline, today's in-memory path (`--data_index false`), in the same run, for sizes up to
  `--baseline_max`: the same three commands. `ratio` = baseline / index (above 1: the index is better).

    .venv/bin/python bench/bench_data_scale.py [--sizes 10000,100000,1000000] [--baseline_max 100000]
        [--prepare_workers 0] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import soundfile as sf
from common import REPO, print_result, result_only_on_stdout

from tests.trainer.datafiles import demo_pairs, seed_sample

CLIPS = 200


def write_clips(directory: Path) -> list[tuple[str, str, float]]:
    """(transcript, relative path, seconds) of 200 distinct one-second clips cut from the bundled speech."""
    (directory / "clips").mkdir(parents=True, exist_ok=True)
    pairs, out = demo_pairs(), []
    for i in range(CLIPS):
        text, src = pairs[i % len(pairs)]
        samples, rate = sf.read(src, dtype="int16")
        start = (i * 97) % max(1, len(samples) // 4)
        clip = samples[start:start + rate].copy()
        clip[0] = i  # every clip's bytes differ, so every one is its own cache entry
        name = f"clips/c{i:03d}.wav"
        if not (directory / name).is_file():
            sf.write(directory / name, clip, rate)
        out.append((text, name, len(clip) / rate))
    return out


def _sample(i: int, clips: list[tuple[str, str, float]]) -> str:
    ref, target = clips[(i + 1) % CLIPS], clips[i % CLIPS]
    return json.dumps(seed_sample((ref[0], ref[1]), (target[0], target[1]), target[2], f"spk{i % 50}"))


def write_dataset(directory: Path, count: int, clips: list[tuple[str, str, float]]) -> Path:
    """`train.json` of `count` samples, written as a stream (a 1M-sample list is about 0.9 GB)."""
    path = directory / f"train-{count}.json"
    if path.is_file():
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("[\n")
        for i in range(count):
            f.write(("," if i else "") + _sample(i, clips) + "\n")
        f.write("]\n")
    tmp.replace(path)
    return path


def append_samples(path: Path, start: int, count: int, clips: list[tuple[str, str, float]]) -> None:
    """Samples `start` to `start + count` appended to the list in `path`, in place (its closing `]` rewritten)."""
    with open(path, "r+b") as f:
        f.seek(-2, os.SEEK_END)
        assert f.read(2) == b"]\n", path
        f.seek(-2, os.SEEK_END)
        f.truncate()
        for i in range(start, start + count):
            f.write(("," + _sample(i, clips) + "\n").encode())
        f.write(b"]\n")


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def measure(argv: list[str], env: dict[str, str], workers_only: bool) -> dict[str, float]:
    """Run `argv`; (wall seconds, peak RSS in GB of its largest process: of a torchrun's workers alone)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, int] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for pid in _descendants(proc.pid):
                if workers_only and pid == proc.pid:
                    continue
                peaks[pid] = max(peaks.get(pid, 0), _peak_rss(pid))
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    output, _ = proc.communicate()
    wall = time.monotonic() - started
    done.set()
    poller.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} ... exited {proc.returncode}:\n{output[-4000:]}")
    return {"seconds": round(wall, 2), "peak_rss_gb": round(max(peaks.values(), default=0) / 1e9, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--baseline_max", type=int, default=100_000)
    parser.add_argument("--prepare_workers", type=int, default=0)  # 0: the option's auto count
    parser.add_argument("--workdir", default=None)
    ns = parser.parse_args()
    from trainer.model.tiny import build_tiny_checkpoint

    if not ns.workdir:
        ns.workdir = tempfile.mkdtemp(prefix="higgs-scale-")
        atexit.register(shutil.rmtree, ns.workdir, ignore_errors=True)
    work = Path(ns.workdir)
    if not (work / "tiny" / "model" / "config.json").is_file():
        build_tiny_checkpoint(work / "tiny")
    clips = write_clips(work)
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env |= {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO)}
    py = sys.executable
    torchrun = [py, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                "--master_port=0", "--standalone", "-m", "trainer"]

    def flags(data: Path, out: str, index: bool) -> list[str]:
        return ["--model_path", str(work / "tiny" / "model"), "--audio_tokenizer_path",
                str(work / "tiny" / "audio_tokenizer"), "--train_data_file", str(data),
                "--output_dir", str(work / out), "--cache_dir", str(work / "cache"), "--use_lora", "--disable_eval",
                "--max_steps", "1", "--save_steps", "1000", "--per_device_train_batch_size", "2",
                "--resume", "never", "--data_index", str(index).lower(),
                "--prepare_workers", str(ns.prepare_workers)]

    warm = write_dataset(work, CLIPS, clips)  # fills the code cache, untimed
    measure([py, "-m", "trainer", "prepare", *flags(warm, "warm", True)], env, False)
    results = []
    for size in [int(s) for s in ns.sizes.split(",")]:
        data = write_dataset(work, size, clips)
        row: dict = {"samples": size}
        for index in ([True, False] if size <= ns.baseline_max else [True]):
            name = "index" if index else "baseline"
            shutil.rmtree(work / "cache" / "index", ignore_errors=True)
            for sub in (work / "cache").glob("*/index"):
                shutil.rmtree(sub, ignore_errors=True)
            out = f"out-{size}-{name}"
            shutil.rmtree(work / out, ignore_errors=True)
            live = data
            if index:  # a copy of its own to append to, beside the clips its samples name
                live = work / "train-live.json"
                shutil.copyfile(data, live)
            prep = measure([py, "-m", "trainer", "prepare", *flags(live, out, index)], env, False)
            prep["samples_per_second"] = round(size / prep["seconds"], 1)
            part = {"prepare": prep}
            if index:
                # 1% more samples in the same file: the rebuild renders only the new parts (trainer.encode.part_store)
                append_samples(live, size, max(1, size // 100), clips)
                again = measure([py, "-m", "trainer", "prepare", *flags(live, out, index)], env, False)
                again["full_over_append"] = round(prep["seconds"] / again["seconds"], 2)
                part["prepare_after_1pct_append"] = again
                found = [p for p in (work / "cache").glob("*/index/*") if p.is_dir() and p.suffix != ".parts"]
                part["index_mb"] = round(sum(f.stat().st_size for p in found for f in p.iterdir()) / 1e6, 1)
                stored = [f for p in (work / "cache").glob("*/index/*.parts") for f in p.iterdir()]
                part["parts_mb"] = round(sum(f.stat().st_size for f in stored) / 1e6, 1)
            shutil.rmtree(work / out, ignore_errors=True)
            part["train_1"] = measure([py, "-m", "trainer", "train", *flags(live, out, index)], env, False)
            shutil.rmtree(work / out, ignore_errors=True)
            part["train_2"] = measure([*torchrun, "train", *flags(live, out, index)], env, True)
            shutil.rmtree(work / out, ignore_errors=True)
            row[name] = part
            print(json.dumps({size: {name: part}}), file=sys.stderr, flush=True)
        if "baseline" in row:
            b, i = row["baseline"], row["index"]
            row["ratio"] = {
                f"{cmd}_{what}": round(b[cmd][what] / i[cmd][what], 2)
                for cmd in ("prepare", "train_1", "train_2") for what in ("seconds", "peak_rss_gb")
            }
        results.append(row)
    from trainer.encode.cpus import prepare_workers

    print_result({"bench": "data_scale", "clips": CLIPS, "prepare_workers": ns.prepare_workers,
                  "prepare_workers_resolved": prepare_workers(ns.prepare_workers),
                  "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 1),
                  "results": results})


if __name__ == "__main__":
    result_only_on_stdout()
    main()
