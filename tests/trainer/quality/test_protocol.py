"""Scores that follow the published protocol: mono and resampled input, long clips heard whole, a forced
language, normalized texts, character scoring for Chinese, per-clip and corpus WER.

The recognizer here is a real Whisper checkpoint whose weights are set so that it always hears one known
sentence (`parrot_whisper`): every expected rate below is worked out by hand in its comment, not by the code
under test."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.trainer.datafiles import DEMO
from tests.trainer.quality.models import parrot_whisper, tiny_wavlm_xvector, tiny_whisper
from trainer import errors
from trainer.__main__ import main
from trainer.quality.intelligibility import Transcriber, prepare, windows
from trainer.quality.normalize import TextRules, count_errors
from trainer.quality.scoring import corpus_rates, means

ARABIC_MARKED = "كَتَبَ الوَلَدُ الدَّرْسَ"  # "the boy wrote the lesson", with harakat
ARABIC_PLAIN = "كتب الولد الدرس"  # the same letters, as a recognizer writes them

# (reference, transcript, rules, unit, errors, length): errors and length counted by hand
TABLE = [
    ("Please close the window.", "please close a window", TextRules(), "word", 1, 4),  # the -> a
    ("Mr. Smith has two colour-coded lists.", "mister smith has 2 color coded lists", TextRules("en", False,
     {"colour": "color"}), "word", 0, 7),  # Mr.->mister, two->2, colour->color, hyphen->space: 7 words
    ("well-known", "well known", TextRules("fr"), "word", 0, 2),  # a hyphen is punctuation: two words
    (unicodedata.normalize("NFD", "Un café noir."), "un café noir", TextRules("fr"), "word", 0, 3),  # NFD == NFC
    (ARABIC_MARKED, ARABIC_PLAIN, TextRules("ar", True), "word", 0, 3),  # harakat removed on request
    (ARABIC_MARKED, ARABIC_PLAIN, TextRules("ar", False), "word", 3, 3),  # kept: every word differs
    ("今天天气很好。", "今天天气真好", TextRules("zh"), "character", 1, 6),  # 很 -> 真 of 6 characters
    ("今天天气很好。", "今天天气真好", TextRules(), "character", 1, 6),  # no language: Han script, by character
    ("words here", "", TextRules(), "word", 2, 2),  # nothing heard: two deletions
    ("hi", "hi there you", TextRules(), "word", 2, 1),  # two insertions over one word: WER 2.0
]


@pytest.mark.parametrize(("reference", "heard", "rules", "unit", "errs", "length"), TABLE)
def test_known_cases_score_the_rates_worked_out_by_hand(reference, heard, rules, unit, errs, length) -> None:
    counts = count_errors(reference, heard, rules)
    assert (counts.unit, counts.errors, counts.units) == (unit, errs, length)
    assert counts.wer == pytest.approx(errs / length)


def test_character_rate_counts_spaces_as_jiwer_does() -> None:
    # "please close the window" (23 characters) -> "please close a window": t,h,e -> a is 1 sub + 2 del
    assert count_errors("please close the window", "please close a window").cer == pytest.approx(3 / 23)


def test_wer_is_reported_as_the_mean_of_clips_and_as_the_corpus_rate() -> None:
    rows = [{"wer": 0.25, "wer_errors": 1, "wer_length": 4}, {"wer": 1.0, "wer_errors": 2, "wer_length": 2}]
    assert means(rows)["wer"] == pytest.approx(0.625)  # (0.25 + 1.0) / 2
    assert corpus_rates(rows)["wer_corpus"] == pytest.approx(0.5)  # (1 + 2) / (4 + 2)


def _speech(seconds: float) -> tuple[np.ndarray, int]:
    """Real speech (the bundled espeak-ng clips) with 0.3 s pauses between utterances, `seconds` long."""
    parts, total, rate = [], 0, 24000
    clips = sorted((DEMO / "audio").glob("*/*.flac"))
    while total < seconds * rate:
        x, rate = sf.read(str(clips[len(parts) // 2 % len(clips)]), dtype="float32")
        parts += [x, np.zeros(int(0.3 * rate), np.float32)]
        total += len(x) + int(0.3 * rate)
    return np.concatenate(parts)[: int(seconds * rate)], rate


def test_a_long_clip_is_cut_into_windows_at_a_pause_and_nothing_is_dropped() -> None:
    x, rate = _speech(45.0)
    pieces = windows(x, 30 * rate, rate)
    assert len(pieces) == 2 and len(pieces[0]) <= 30 * rate
    assert np.array_equal(np.concatenate(pieces), x)
    edge = x[len(pieces[0]) - rate // 100: len(pieces[0]) + rate // 100]
    assert np.sqrt(np.mean(edge ** 2)) < 0.1 * np.sqrt(np.mean(x ** 2))  # the cut falls in a pause


def _folder(root: Path, clips: list[tuple[str, np.ndarray, int, str]]) -> Path:
    """A samples folder as synthesize writes it: clips and samples.jsonl."""
    root.mkdir(parents=True)
    rows = []
    for name, samples, rate, text in clips:
        sf.write(str(root / f"{name}.wav"), samples, rate, subtype="FLOAT")
        rows.append({"id": name, "file": f"{name}.wav", "text": text})
    (root / "samples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return root


def _evaluate(folder: Path, asr: Path, capsys, *extra: str) -> tuple[dict, list[dict]]:
    capsys.readouterr()
    assert main(["evaluate", "--samples_dir", str(folder), "--asr_model_path", str(asr), *extra]) == errors.OK
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return summary, [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]


def test_evaluate_mixes_a_stereo_48khz_clip_to_mono_for_both_models(tmp_path, capsys) -> None:
    import torch
    import torchaudio.functional

    x, rate = _speech(2.0)
    x48 = torchaudio.functional.resample(torch.from_numpy(x), rate, 48000).numpy()
    folder = _folder(tmp_path / "clips", [("stereo", np.stack([x48, x48], axis=1), 48000, "Please close the window.")])
    sf.write(str(tmp_path / "ref.wav"), x48, 48000, subtype="FLOAT")  # the same voice, one channel
    rows = [json.loads(r) for r in (folder / "samples.jsonl").read_text().splitlines()]
    rows[0]["reference_audio"] = str(tmp_path / "ref.wav")
    (folder / "samples.jsonl").write_text(json.dumps(rows[0]) + "\n")
    asr = parrot_whisper(tmp_path / "asr", "please close the window")
    summary, rows = _evaluate(folder, asr, capsys, "--speaker_model_path",
                              str(tiny_wavlm_xvector(tmp_path / "sv")), "--language", "en")
    assert rows[0]["transcript"] == "please close the window" and rows[0]["wer"] == 0.0  # one clip, heard once
    assert rows[0]["speaker_similarity"] == pytest.approx(1.0, abs=1e-5)  # identical channels == the mono clip
    assert summary["clips"] == 1 and summary["wer"] == 0.0


def test_evaluate_hears_a_45_second_clip_in_two_windows_not_cut_at_30(tmp_path, capsys) -> None:
    x, rate = _speech(45.0)
    folder = _folder(tmp_path / "clips", [("long", x, rate, "The cat. The cat.")])
    # the parrot hears "the cat" in each 30 s window: two windows, four words, no error; cut at 30 s it would
    # hear "the cat" once: 2 deletions of 4 words, WER 0.5
    _, rows = _evaluate(folder, parrot_whisper(tmp_path / "asr", "the cat"), capsys)
    assert rows[0]["transcript"] == "the cat the cat"
    assert (rows[0]["wer"], rows[0]["wer_errors"], rows[0]["wer_length"]) == (0.0, 0, 4)


def test_evaluate_arabic_with_diacritics_scores_zero_only_without_them(tmp_path, capsys) -> None:
    x, rate = _speech(1.0)
    folder = _folder(tmp_path / "clips", [("ar", x, rate, ARABIC_MARKED)])
    asr = parrot_whisper(tmp_path / "asr", ARABIC_PLAIN)
    _, rows = _evaluate(folder, asr, capsys, "--language", "ar", "--strip_diacritics", "true")
    assert rows[0]["wer"] == 0.0  # the same three words once the harakat are gone
    _, rows = _evaluate(folder, asr, capsys, "--language", "arabic")
    assert rows[0]["wer"] == 1.0  # harakat kept: 3 substitutions of 3 words


def test_evaluate_compares_nfd_text_with_an_nfc_transcript(tmp_path, capsys) -> None:
    x, rate = _speech(1.0)
    folder = _folder(tmp_path / "clips", [("fr", x, rate, unicodedata.normalize("NFD", "Un café noir."))])
    _, rows = _evaluate(folder, parrot_whisper(tmp_path / "asr", "un café noir"), capsys, "--language", "fr")
    assert rows[0]["wer"] == 0.0  # raw texts differ in 2 of 3 words (Un/un, café NFD/NFC, noir./noir)


def test_evaluate_scores_chinese_by_character_with_mean_and_corpus_rates(tmp_path, capsys) -> None:
    x, rate = _speech(1.0)
    folder = _folder(tmp_path / "clips", [("a", x, rate, "今天天气很好。"), ("b", x, rate, "今天天气真好吗")])
    summary, rows = _evaluate(folder, parrot_whisper(tmp_path / "asr", "今天天气真好"), capsys, "--language", "zh")
    # a: 很 -> 真, 1 of 6 characters; b: 吗 missing, 1 of 7. Unsegmented words would make a's WER 1.0.
    assert [(r["wer_unit"], r["wer_errors"], r["wer_length"]) for r in rows] == [("character", 1, 6),
                                                                                   ("character", 1, 7)]
    assert summary["wer"] == pytest.approx((1 / 6 + 1 / 7) / 2, abs=1e-4)
    assert summary["wer_corpus"] == pytest.approx(2 / 13, abs=1e-4)


def test_the_language_option_forces_the_decoder_prompt(tmp_path) -> None:
    import torch

    asr = parrot_whisper(tmp_path / "asr", None)  # random weights: what it says depends on its prompt
    x, rate = _speech(2.0)
    t = Transcriber(str(asr), language="ar")
    vocab = json.loads((asr / "vocab.json").read_text())
    mono = prepare(x, rate, t.rate)
    inputs = t.processor.feature_extractor(mono, sampling_rate=t.rate, return_tensors="pt").input_features

    def greedy(lang: str) -> list[int]:
        prompt = [vocab[s] for s in ("<|startoftranscript|>", f"<|{lang}|>", "<|transcribe|>", "<|notimestamps|>")]
        with torch.inference_mode():
            out = t.model.generate(inputs, decoder_input_ids=torch.tensor([prompt]), max_new_tokens=20)
        ids = [int(i) for i in out[0]]
        return ids[len(prompt):] if ids[: len(prompt)] == prompt else ids  # with or without its prompt

    assert greedy("ar") != greedy("en")  # the prompt decides what this model says
    assert t.token_ids(mono, 20) == greedy("ar")


@pytest.mark.parametrize("which", ["asr_is_speaker_model", "speaker_is_asr_model", "asr_is_tts_model",
                                   "asr_weights_broken"])
def test_evaluate_refuses_a_wrong_model_in_one_line_naming_the_option(which, tmp_path, tiny_ckpt, capsys) -> None:
    import shutil

    folder = _folder(tmp_path / "clips", [("a", *_speech(1.0), "hi")])
    option = "--speaker_model_path" if which == "speaker_is_asr_model" else "--asr_model_path"
    model = {"asr_is_speaker_model": lambda: tiny_wavlm_xvector(tmp_path / "sv"),
             "speaker_is_asr_model": lambda: tiny_whisper(tmp_path / "w"),
             "asr_is_tts_model": lambda: tiny_ckpt[0],
             "asr_weights_broken": lambda: tiny_whisper(tmp_path / "w")}[which]()
    if which == "asr_weights_broken":
        broken = tmp_path / "broken"
        shutil.copytree(model, broken)
        (broken / "model.safetensors").write_bytes(b"not weights")
        model = broken
    capsys.readouterr()
    assert main(["evaluate", "--samples_dir", str(folder), option, str(model)]) == errors.CONFIG_ERROR
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and option in err[0] and str(model) in err[0], err


def test_evaluate_refuses_a_language_whisper_does_not_know_before_loading(tmp_path, capsys) -> None:
    folder = _folder(tmp_path / "clips", [("a", *_speech(1.0), "hi")])
    broken = tmp_path / "asr"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "whisper"}))  # no weights: nothing may load
    assert main(["evaluate", "--samples_dir", str(folder), "--asr_model_path", str(broken), "--language",
                 "klingon"]) == errors.CONFIG_ERROR
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--language / LANGUAGE: unknown language 'klingon'" in err[0], err
