"""build-dataset's segmentation speed, and the corpus readers' throughput against the JSONL reader's.

- segmentation: a long recording of espeak-ng speech (`tests/trainer/recordings/speech.py`: sentences of two voices
  joined by pauses of 0.4 to 1.5 s, `--audio_minutes` long) through build-dataset's segment step
  (`trainer.recordings.steps.segment`: read, resample to 16 kHz, silero-vad scores, utterances), on one thread;
  figure: hours of audio per hour of CPU (process time). Baseline of the same run: silero-vad's own
  `get_speech_timestamps` on the same 16 kHz signal (one stream, its defaults). The bench checks that every
  sentence was found. With the tiny random Whisper of the tests (`tests/trainer/quality/models.py`), the segment
  and transcribe steps together show what the recognizer's plumbing costs per hour (a real model costs far more).
- readers: `--samples` clips (real speech, `--clip_seconds` each; 8 kHz 16-bit, so 50,000 of them stay small) laid
  out as LJSpeech, LibriTTS, Common Voice (MP3) and a Hugging Face parquet file with embedded bytes, and the same
  files listed in a JSONL manifest; `trainer.data.load.load_conversations` on each, warm (after one untimed read,
  which for the parquet file also writes its clips out), median of `--repeats`, alternating with the JSONL read of
  the same files. `ratio_to_jsonl` is layout seconds / JSONL seconds; the bench checks every sample is read and none
  is bad.
- targets: segmentation at least `--min_realtime` (100) times real time, each reader within `--max_ratio` (2) of
  JSONL. The result is printed either way; a missed target or a failed check exits 1.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_build_dataset.py [--audio_minutes 10] [--samples 50000]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from common import print_result, result_only_on_stdout  # also puts the repository on sys.path

from tests.trainer.recordings.speech import SENTENCES, spoken

SYSTEM = "Generate audio following instruction."


def long_recording(path: Path, minutes: float) -> tuple[int, float]:
    """(utterances, seconds) of a recording of alternating voices and pauses, about `minutes` long."""
    rng = np.random.default_rng(0)
    clips = [spoken(v, s) for v in ("en-us", "en-gb") for s in SENTENCES]
    rate = clips[0][1]
    parts, total, count = [], 0, 0
    while total < minutes * 60 * rate:
        samples, _ = clips[count % len(clips)]
        pause = np.zeros(round(rng.uniform(0.4, 1.5) * rate), dtype=np.float32)
        parts += [pause, samples]
        total += len(pause) + len(samples)
        count += 1
    parts.append(np.zeros(rate, dtype=np.float32))
    audio = np.concatenate(parts)
    sf.write(path, audio, rate, subtype="PCM_16")
    return count, len(audio) / rate


def segmentation(work: Path, minutes: float, asr: bool) -> dict:
    import torch
    import torchaudio.functional
    from silero_vad import get_speech_timestamps, load_silero_vad

    from trainer.recordings import steps
    from trainer.recordings.measure import Limits

    torch.set_num_threads(1)
    path = work / "rec" / "long.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    expected, seconds = long_recording(path, minutes)
    settings = steps.Settings(Limits(1.0, 20.0, -45.0, 4.0, 30.0), 0.3, None, str(work / "out"))
    rec = steps.discover(str(path.parent))[0]
    steps.segment(rec, settings)  # untimed: loads the model
    t = time.process_time()
    seg = steps.segment(rec, settings)
    ours = time.process_time() - t
    samples, rate = sf.read(path, dtype="float32")
    at16k = torchaudio.functional.resample(torch.from_numpy(samples), rate, 16000)
    model = load_silero_vad()
    t = time.process_time()
    baseline = get_speech_timestamps(at16k, model, sampling_rate=16000)
    base = time.process_time() - t
    out = {"audio_seconds": round(seconds, 1), "utterances_expected": expected,
           "utterances_found": len(seg["utterances"]), "silero_timestamps_found": len(baseline),
           "cpu_seconds": round(ours, 3), "hours_per_cpu_hour": round(seconds / ours, 1),
           "baseline_get_speech_timestamps_cpu_seconds": round(base, 3),
           "baseline_hours_per_cpu_hour": round(seconds / base, 1), "speedup_vs_baseline": round(base / ours, 2)}
    if asr:
        from tests.trainer.quality.models import tiny_whisper

        whisper = tiny_whisper(work / "whisper")
        with_asr = steps.Settings(settings.limits, 0.3, str(whisper), settings.dataset_dir)
        steps.transcribe(rec, {"utterances": seg["utterances"][:1]}, with_asr)  # untimed: loads the model
        t = time.process_time()
        seg2 = steps.segment(rec, with_asr)
        steps.transcribe(rec, seg2, with_asr)
        both = time.process_time() - t
        out |= {"with_tiny_asr_cpu_seconds": round(both, 3),
                "with_tiny_asr_hours_per_cpu_hour": round(seconds / both, 1)}
    return out


def corpora(work: Path, n: int, clip_seconds: float) -> dict[str, tuple[Path, Path]]:
    """layout -> (its path, a JSONL manifest of the same files in the same order), built once per workdir."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = work / "corpora.json"
    if done.is_file():
        return {k: (Path(a), Path(b)) for k, (a, b) in json.loads(done.read_text()).items()}
    rate = 8000
    source = np.concatenate([spoken("en-us", s)[0] for s in SENTENCES])
    source = np.interp(np.arange(0, len(source), 22050 / rate), np.arange(len(source)), source).astype(np.float32)
    frames = round(clip_seconds * rate)
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(n)]
    pieces = [source[(i * 997) % (len(source) - frames):][:frames].copy() for i in range(n)]
    for i, p in enumerate(pieces):
        p[0] = (i % 1000) / 32768  # every file differs
    out: dict[str, tuple[Path, Path]] = {}

    def manifest(name: str, paths: list[Path]) -> Path:
        m = work / f"{name}.jsonl"
        lines = (json.dumps({"audio": str(p), "text": t}) + "\n" for p, t in zip(paths, texts, strict=True))
        m.write_text("".join(lines))
        return m

    lj = work / "ljspeech"
    (lj / "wavs").mkdir(parents=True)
    paths = [lj / "wavs" / f"LJ{i:06d}.wav" for i in range(n)]
    for p, samples in zip(paths, pieces, strict=True):
        sf.write(p, samples, rate, subtype="PCM_16")
    (lj / "metadata.csv").write_text("".join(f"LJ{i:06d}|{t}|{t}\n" for i, t in enumerate(texts)))
    out["ljspeech"] = (lj, manifest("ljspeech", paths))

    lt = work / "libritts"
    lt_paths = []
    for i, t in enumerate(texts):
        folder = lt / f"{i % 20}" / "1"
        folder.mkdir(parents=True, exist_ok=True)
        p = folder / f"{i % 20}_1_{i:06d}.wav"
        os.link(paths[i], p)
        (folder / f"{i % 20}_1_{i:06d}.normalized.txt").write_text(t)
        lt_paths.append(p)
    order = sorted(range(n), key=lambda i: (str(i % 20), lt_paths[i].name))
    texts_lt = [texts[i] for i in order]
    m = work / "libritts.jsonl"
    m.write_text("".join(json.dumps({"audio": str(lt_paths[i]), "text": t}) + "\n" for i, t in zip(order, texts_lt,
                                                                                              strict=True)))
    out["libritts"] = (lt, m)

    cv = work / "commonvoice"
    (cv / "clips").mkdir(parents=True)
    cv_paths = [cv / "clips" / f"cv_{i:06d}.mp3" for i in range(n)]
    for p, samples in zip(cv_paths, pieces, strict=True):
        sf.write(p, np.resize(samples, rate // 2), rate, format="MP3")
    (cv / "validated.tsv").write_text("client_id\tpath\tsentence\n" + "".join(
        f"s{i % 20}\t{p.name}\t{t}\n" for i, (p, t) in enumerate(zip(cv_paths, texts, strict=True))))
    out["commonvoice"] = (cv, manifest("commonvoice", cv_paths))

    table = pa.table({"audio": [{"bytes": p.read_bytes(), "path": p.name} for p in paths], "text": texts,
                      "speaker_id": [f"s{i % 20}" for i in range(n)]})
    pq.write_table(table, work / "hf.parquet")
    out["hf_parquet"] = (work / "hf.parquet", manifest("hf_parquet", paths))  # JSONL of the same bytes' files
    done.write_text(json.dumps({k: [str(a), str(b)] for k, (a, b) in out.items()}))
    return out


def readers(work: Path, n: int, clip_seconds: float, repeats: int) -> dict:
    from trainer.data.load import load_conversations

    def read(path: Path) -> float:
        t = time.perf_counter()
        good, bad = load_conversations(path, system_prompt=SYSTEM, max_audio_seconds=30)
        seconds = time.perf_counter() - t
        if len(good) != n or bad:
            raise SystemExit(f"{path}: read {len(good)} of {n} samples, {len(bad)} bad: {bad[:2]}")
        return seconds

    out = {}
    for name, (path, manifest) in corpora(work, n, clip_seconds).items():
        read(path), read(manifest)  # untimed: page cache, and the parquet file's clips written out
        ours, base = [], []
        for r in range(repeats):
            pair = [(ours, path), (base, manifest)]
            for times, p in pair if r % 2 == 0 else pair[::-1]:
                times.append(read(p))
        o, b = statistics.median(ours), statistics.median(base)
        out[name] = {"samples_per_second": round(n / o), "jsonl_samples_per_second": round(n / b),
                     "ratio_to_jsonl": round(o / b, 3)}
    return out


def main() -> int:
    result_only_on_stdout()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio_minutes", type=float, default=10.0)
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--clip_seconds", type=float, default=0.15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no_asr", action="store_true", help="skip the run with the tiny recognizer")
    p.add_argument("--min_realtime", type=float, default=100.0)
    p.add_argument("--max_ratio", type=float, default=2.0)
    p.add_argument("--workdir", default=None, help="keep the corpora here (default: a temp dir)")
    ns = p.parse_args()
    if not ns.workdir:
        ns.workdir = tempfile.mkdtemp(prefix="higgs-bench-build-")
        atexit.register(shutil.rmtree, ns.workdir, ignore_errors=True)
    work = Path(ns.workdir)
    seg = segmentation(work / "segmentation", ns.audio_minutes, not ns.no_asr)
    read = readers(work / f"readers-{ns.samples}", ns.samples, ns.clip_seconds, ns.repeats)
    found_all = seg["utterances_found"] == seg["utterances_expected"]
    met = seg["hours_per_cpu_hour"] >= ns.min_realtime and all(r["ratio_to_jsonl"] <= ns.max_ratio
                                                               for r in read.values())
    result = {"segmentation": seg, "readers": read, "samples": ns.samples, "cpu_threads": 1,
              "target": {"min_realtime": ns.min_realtime, "max_ratio_to_jsonl": ns.max_ratio, "met": met},
              "checks": {"every_utterance_found": found_all}}
    print_result(result)
    if not found_all:
        print(f"segmentation found {seg['utterances_found']} of {seg['utterances_expected']} utterances",
              file=sys.stderr)
        return 1
    if not met:
        print("target missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
