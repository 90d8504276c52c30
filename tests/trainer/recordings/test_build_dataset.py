"""build-dataset on long recordings made of espeak-ng clips joined by silences of known length: clip boundaries
against the true ones, transcripts from scripts (text checked) and from a tiny random Whisper (plumbing only),
filters and bad recordings counted, resumption after a kill, determinism, and the result training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import clean_env, to_argv
from tests.trainer.recordings.speech import SENTENCES, long_recording
from trainer.__main__ import main
from trainer.data.load import load_conversations

PAUSES = {"alice": [0.6, 1.2, 0.45, 2.0], "bob": [0.8, 1.0, 0.5, 0.9]}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> tuple[Path, dict[str, list[tuple[float, float]]]]:
    """Two speakers, a folder each: one long recording with its script, and each utterance's true span."""
    root = tmp_path_factory.mktemp("recordings")
    truth = {}
    for speaker, voice in (("alice", "en-us"), ("bob", "en-gb")):
        path = root / speaker / f"{speaker}-take1.wav"
        truth[speaker] = long_recording(path, voice, SENTENCES, PAUSES[speaker])
        path.with_suffix(".txt").write_text("\n".join(SENTENCES) + "\n")
    return root, truth


def build(src: Path, out: Path, *extra: str) -> int:
    return main(["build-dataset", "--recordings_dir", str(src), "--dataset_dir", str(out), *extra])


def test_clip_boundaries_are_within_100_ms_of_the_true_ones_and_texts_follow_the_script(recordings, tmp_path):
    src, truth = recordings
    assert build(src, tmp_path / "ds") == 0
    for speaker, spans in truth.items():
        cut = json.loads((tmp_path / "ds" / ".build" / f"{speaker}__{speaker}-take1.cut.json").read_text())
        found = [(c["start"], c["end"]) for c in cut["clips"]]
        assert len(found) == len(spans)
        for (start, end), (true_start, true_end) in zip(found, spans, strict=True):
            assert abs(start - true_start) <= 0.1 and abs(end - true_end) <= 0.1, (speaker, start, end, true_start)
        assert [c["text"] for c in cut["clips"]] == SENTENCES
    train = json.loads((tmp_path / "ds" / "train.json").read_text())
    conversations, bad = load_conversations(tmp_path / "ds" / "train.json", system_prompt="-", max_audio_seconds=30)
    assert bad == [] and len(conversations) == 10
    for conv, sample in zip(conversations, train, strict=True):
        texts = [m["content"][0].get("text") for m in conv.messages if m["role"] == "user"]
        ref_path, target = conv.audio_paths()
        assert texts[-1] == sample["misc"]["target_transcript"] and Path(ref_path).parent == Path(target).parent
        assert ref_path != target  # a reference of the same speaker, never the target
        # The clip holds the utterance: its length is the true one within 200 ms (both ends within 100 ms).
        i = SENTENCES.index(texts[-1])
        true_start, true_end = truth[conv.speaker][i]
        assert abs(sf.info(target).duration - (true_end - true_start)) <= 0.2
    report = json.loads((tmp_path / "ds" / "build-report.json").read_text())
    assert report["clips"] == 10 and report["recordings"] == 2 and report["without_reference"] == 0
    assert sum(v["clips"] for v in report["rejects"].values()) == 0


def test_an_over_long_utterance_is_split_at_its_longest_pause(recordings, tmp_path):
    src, truth = recordings
    # alice's pauses are 0.6, 1.2, 0.45 and 2.0 s: with --min_pause_seconds 1.5 her first four sentences are one
    # utterance of about 11 s, which --max_seconds 7 splits at its longest pause (1.2 s), and no further. (The
    # script then has 5 lines for 3 utterances: the recording is reported, after segmentation.)
    assert build(src / "alice", tmp_path / "ds", "--min_pause_seconds", "1.5", "--max_seconds", "7") == 3
    spans = json.loads((tmp_path / "ds" / ".build" / "alice-take1__alice-take1.segment.json").read_text())
    t = truth["alice"]
    assert len(spans["utterances"]) == 3
    first, second, _ = spans["utterances"]
    assert abs(first[0] - t[0][0]) <= 0.1 and abs(first[1] - t[1][1]) <= 0.1  # split at the 1.2 s pause
    assert abs(second[0] - t[2][0]) <= 0.1 and abs(second[1] - t[3][1]) <= 0.1  # the 0.45 s pause kept inside


def test_filters_count_their_reasons(recordings, tmp_path):
    src, _ = recordings
    samples, rate = sf.read(src / "bob" / "bob-take1.wav", dtype="float32")
    (tmp_path / "in").mkdir()
    takes = {
        "quiet": (samples * 0.02, SENTENCES),  # about -54 dBFS, still speech to the detector
        "loud": (np.clip(samples * 40, -1, 1), SENTENCES),
        "silent": (np.zeros(rate * 3, dtype=np.float32), []),
        # the fourth line is not what is said there: one character in 2.3 s is no speaking rate
        "fine": (samples, [*SENTENCES[:3], "x", SENTENCES[4]]),
    }
    for name, (audio, lines) in takes.items():
        sf.write(tmp_path / "in" / f"{name}.wav", audio, rate, subtype="PCM_16")
        (tmp_path / "in" / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    assert build(tmp_path / "in", tmp_path / "ds") == 0
    report = json.loads((tmp_path / "ds" / "build-report.json").read_text())
    counts = {r: v["clips"] for r, v in report["rejects"].items() if v["clips"]}
    assert counts == {"too_quiet": 5, "clipped": 5, "no_speech": 1, "suspicious_text": 1}, counts
    assert report["clips"] == 4 and report["speakers"]["fine"]["clips"] == 4


def test_bad_recordings_are_named_counted_and_stop_the_build_unless_skipped(recordings, tmp_path, capsys):
    src, _ = recordings
    inp = tmp_path / "in"
    (inp / "alice").mkdir(parents=True)
    good = inp / "alice" / "good.wav"
    good.write_bytes((src / "alice" / "alice-take1.wav").read_bytes())
    good.with_suffix(".txt").write_text("\n".join(SENTENCES) + "\n")
    (inp / "alice" / "broken.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(inp / "alice" / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    wrong = inp / "alice" / "wrong.wav"
    wrong.write_bytes(good.read_bytes())
    wrong.with_suffix(".txt").write_text("\n".join(SENTENCES[:4]) + "\n")
    assert build(inp, tmp_path / "ds") == 3
    err = capsys.readouterr().err
    assert "data error: 3 bad samples:" in err
    assert f"{inp / 'alice' / 'broken.wav'}: unreadable audio:" in err
    assert f"{inp / 'alice' / 'empty.wav'}: empty audio (no samples)" in err
    assert (f"{wrong.with_suffix('.txt')}: 4 transcript lines, but 5 utterances were found in {wrong}") in err
    assert not (tmp_path / "ds" / "train.json").exists()

    assert build(inp, tmp_path / "ds", "--skip_bad_samples", "true") == 0
    report = json.loads((tmp_path / "ds" / "build-report.json").read_text())
    assert len(report["bad_recordings"]) == 3 and report["clips"] == 5
    assert report["rejects"]["transcript_mismatch"]["clips"] == 5


@pytest.mark.slow  # loads transformers' Whisper classes
def test_transcripts_from_a_tiny_random_whisper_reach_the_dataset(recordings, tmp_path):
    from tests.trainer.quality.models import tiny_whisper
    from trainer.quality.intelligibility import Transcriber

    src, _ = recordings
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "bob.wav").write_bytes((src / "bob" / "bob-take1.wav").read_bytes())  # no script: the recognizer
    whisper = tiny_whisper(tmp_path / "whisper")
    # Random weights speak nonsense: keep every text that is not empty so that the plumbing shows.
    assert build(inp, tmp_path / "ds", "--asr_model_path", str(whisper), "--min_chars_per_second", "0",
                 "--max_chars_per_second", "100000") == 0
    text = json.loads((tmp_path / "ds" / ".build" / "bob__bob.transcribe.json").read_text())
    assert text["source"] == "asr" and len(text["texts"]) == 5
    recognizer = Transcriber(str(whisper))
    cut = json.loads((tmp_path / "ds" / ".build" / "bob__bob.cut.json").read_text())
    for clip in cut["clips"]:
        samples, rate = sf.read(tmp_path / "ds" / clip["file"], dtype="float32")
        assert clip["text"] == recognizer.transcribe(samples, rate).strip()


@pytest.mark.slow  # two worker processes start (spawn) and import torch
def test_the_output_is_deterministic_and_the_same_with_workers(recordings, tmp_path):
    src, _ = recordings
    assert build(src, tmp_path / "a") == 0
    assert build(src, tmp_path / "b", "--workers", "2") == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


@pytest.mark.slow
def test_a_killed_build_resumes_without_redoing_finished_recordings(recordings, tmp_path):
    src, _ = recordings
    inp = tmp_path / "in"
    for i in range(6):  # six recordings, so that the kill lands between two of them
        (inp / f"s{i}").mkdir(parents=True)
        for suffix in (".wav", ".txt"):
            (inp / f"s{i}" / f"take{suffix}").write_bytes((src / "alice" / f"alice-take1{suffix}").read_bytes())
    out = tmp_path / "ds"
    argv = [sys.executable, "-m", "trainer", "build-dataset", "--recordings_dir", str(inp), "--dataset_dir", str(out)]
    proc = subprocess.Popen(argv, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / ".build"
    deadline = time.monotonic() + 120
    while not list(state.glob("*.segment.json")) and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in state.glob("*.json")}
    assert finished and len(finished) < 18 and not (out / "train.json").exists()
    subprocess.run(argv, env=clean_env(), check=True, capture_output=True, timeout=300)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not redone
    assert len(list(state.glob("*.json"))) == 18
    fresh = tmp_path / "fresh"
    subprocess.run([*argv[:-1], str(fresh)], env=clean_env(), check=True, capture_output=True, timeout=300)
    assert (out / "train.json").read_text().replace(str(out), "") == (fresh / "train.json").read_text().replace(
        str(fresh), "")
    assert (out / "build-report.json").read_bytes() == (fresh / "build-report.json").read_bytes()


@pytest.mark.slow
def test_the_built_dataset_trains_and_prepares_on_the_tiny_model(recordings, tmp_path, base_args):
    src, _ = recordings
    assert build(src, tmp_path / "ds") == 0
    args = base_args | {"train_data_file": str(tmp_path / "ds" / "train.json"), "max_steps": "3",
                        "save_steps": "100", "cache_dir": str(tmp_path / "cache")}
    for command in ("prepare", "train"):
        proc = subprocess.run([sys.executable, "-m", "trainer", command, *to_argv(args)], env=clean_env(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert (Path(args["output_dir"]) / "lora_adapters" / "adapter_model.safetensors").is_file()
    assert os.path.isdir(tmp_path / "cache")
