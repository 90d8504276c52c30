"""The per-recording steps of build-dataset, each kept so that an interrupted build resumes where it stopped.

Each step runs over every recording before the next starts, with a progress bar, and each result is kept in
`DATASET_DIR/.build/`: a recording whose step result is there is not processed again.

1. segment: voice-activity utterances (`trainer.recordings.vad`);
2. transcribe: the recording's script, or the recognizer (`trainer.recordings.transcripts`);
3. cut: the filters (`trainer.recordings.measure`) and the kept clips written as 16-bit WAV.

A step's result is written (atomically) only once the step is complete for that recording; a recording that
cannot be used (unreadable, empty, a script that does not match) gets an `error` result, reported by the
command like any other bad sample.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from typing import Any

import numpy as np
import soundfile as sf

from trainer.recordings import transcripts, vad
from trainer.recordings.measure import Limits, audio_reason, measure, text_reason

STATE_DIR = ".build"


@dataclass(frozen=True)
class Recording:
    """A long recording, and the speaker it belongs to: its folder, or the recording itself at the top level."""

    path: str
    speaker: str
    stem: str

    @property
    def key(self) -> str:
        """A file-name-safe key of the recording, under which its step results are kept."""
        return re.sub(r"[^\w.-]", "_", f"{self.speaker}__{self.stem}")


@dataclass(frozen=True)
class Settings:
    """What the steps need from the options: the filters, the pause length, the recognizer and the output."""
    limits: Limits
    min_pause: float
    asr_model_path: str | None
    dataset_dir: str


def _audio_suffixes() -> set[str]:
    return {f".{name.lower()}" for name in sf.available_formats()} | {".mp3", ".oga", ".aif", ".opus"}


def discover(directory: str) -> list[Recording]:
    """Audio files at the top level (one speaker each) and one folder down (the folder is the speaker), sorted."""
    suffixes = _audio_suffixes()
    found = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.startswith("."):
            continue
        if os.path.isdir(path):
            for inner in sorted(os.listdir(path)):
                stem, suffix = os.path.splitext(inner)
                if suffix.lower() in suffixes and not inner.startswith("."):
                    found.append(Recording(os.path.abspath(os.path.join(path, inner)), name, stem))
        elif os.path.splitext(name)[1].lower() in suffixes:
            stem = os.path.splitext(name)[0]
            found.append(Recording(os.path.abspath(path), stem, stem))
    return found


def read_mono(path: str) -> tuple[np.ndarray, int]:
    """The whole recording as one float32 channel. Raises ValueError naming the problem."""
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        raise ValueError(f"unreadable audio: {getattr(err, 'error_string', None) or err}") from None
    if samples.shape[0] == 0:
        raise ValueError("empty audio (no samples)")
    return (samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]).astype(np.float32), int(rate)


def segment(rec: Recording, settings: Settings) -> dict[str, Any]:
    """The voice-activity utterances of a recording, or an `error` result when it cannot be read."""
    try:
        samples, rate = read_mono(rec.path)
    except ValueError as err:
        return {"error": str(err)}
    import torch
    import torchaudio.functional

    at16k = samples if rate == vad.RATE else torchaudio.functional.resample(
        torch.from_numpy(samples), rate, vad.RATE).numpy()
    regions = vad.speech_regions(vad.speech_scores(at16k))
    seconds = len(samples) / rate
    found = vad.utterances(regions, seconds, min_pause=settings.min_pause, max_seconds=settings.limits.max_seconds)
    return {"seconds": seconds, "rate": rate, "utterances": [[u.start, u.end] for u in found]}


def transcribe(rec: Recording, seg: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A text per utterance: the recording's script, matched line by line, or the recognizer's."""
    spans = seg["utterances"]
    script = transcripts.script_of(rec.path)
    if script is not None:
        try:
            lines = transcripts.script_lines(script)
        except ValueError as err:
            return {"error": str(err), "file": script}
        problem = transcripts.mismatch(script, len(lines), len(spans), rec.path)
        return {"error": problem, "file": script, "reason": "transcript_mismatch"} if problem else \
            {"source": "script", "texts": lines}
    if not settings.asr_model_path:
        return {"error": f"no transcript: no {os.path.basename(script or os.path.splitext(rec.path)[0] + '.txt')} "
                "beside it and no --asr_model_path", "file": rec.path}
    samples, rate = read_mono(rec.path)
    texts = []
    for start, end in spans:
        if not settings.limits.min_seconds <= end - start <= settings.limits.max_seconds:
            texts.append("")  # rejected by length anyway: not worth the recognizer's time
            continue
        texts.append(transcripts.recognize(settings.asr_model_path, samples[round(start * rate): round(end * rate)],
                                           rate))
    return {"source": "asr", "texts": texts}


def cut(rec: Recording, seg: dict[str, Any], text: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Write the clips that pass the filters as 16-bit WAV, and count the rejected ones by reason."""
    samples, rate = read_mono(rec.path)
    clips, rejects = [], {}
    if not seg["utterances"]:
        rejects["no_speech"] = (1, seg["seconds"])  # the whole recording: the detector found no speech in it
    folder = os.path.join(settings.dataset_dir, "clips", rec.speaker)
    for i, ((start, end), words) in enumerate(zip(seg["utterances"], text["texts"], strict=True)):
        piece = samples[round(start * rate): round(end * rate)]
        seconds = len(piece) / rate
        m = measure(piece, rate)
        reason = audio_reason(seconds, m, settings.limits) or text_reason(words, seconds, settings.limits)
        if reason:
            count, total = rejects.get(reason, (0, 0.0))
            rejects[reason] = (count + 1, total + seconds)
            continue
        name = f"{rec.stem}_{i:04d}.wav"
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.tmp")
        sf.write(tmp, piece, rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, os.path.join(folder, name))
        clips.append({"file": f"clips/{rec.speaker}/{name}", "text": words.strip(), "seconds": round(seconds, 4),
                      "start": start, "end": end, "clean_db": m.clean_db})
    return {"clips": clips, "rejects": {k: [n, round(s, 4)] for k, (n, s) in sorted(rejects.items())}}


def run_step(name: str, recordings: list[Recording], work: Callable[..., dict[str, Any]], inputs: list[tuple],
             settings: Settings, workers: int) -> dict[str, dict[str, Any]]:
    """`work(recording, *inputs, settings)` for each recording without a kept result; every result, by key."""
    from tqdm import tqdm

    state = os.path.join(settings.dataset_dir, STATE_DIR)
    os.makedirs(state, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for rec, args in zip(recordings, inputs, strict=True):
        path = os.path.join(state, f"{rec.key}.{name}.json")
        if os.path.isfile(path):
            with open(path) as f:
                results[rec.key] = json.load(f)
        else:
            todo.append((rec, args))
    job = partial(_one, work=work, settings=settings)
    with tqdm(total=len(recordings), initial=len(results), desc=name, unit="recording", disable=None) as bar:
        if workers <= 1 or len(todo) <= 1:
            done = (job(rec, args) for rec, args in todo)
            for (rec, _), result in zip(todo, done, strict=True):
                results[rec.key] = _keep(state, rec, name, result)
                bar.update()
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = [(rec, pool.submit(job, rec, args)) for rec, args in todo]
                for rec, future in futures:
                    results[rec.key] = _keep(state, rec, name, future.result())
                    bar.update()
    return results


def _one(rec: Recording, args: tuple, *, work: Callable[..., dict[str, Any]], settings: Settings) -> dict[str, Any]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one recording per core: workers, not threads, are the parallelism
    try:
        return work(rec, *args, settings)
    finally:
        torch.set_num_threads(threads)


def _keep(state: str, rec: Recording, name: str, result: dict[str, Any]) -> dict[str, Any]:
    path = os.path.join(state, f"{rec.key}.{name}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)
    return result
