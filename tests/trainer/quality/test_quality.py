"""Error rates through jiwer and a tiny real Whisper, speaker similarity through a tiny real WavLM x-vector."""

from __future__ import annotations

import pytest
import soundfile as sf

from tests.trainer.datafiles import DEMO
from tests.trainer.quality.models import tiny_wavlm_xvector, tiny_whisper
from trainer.quality.intelligibility import Transcriber, error_rates
from trainer.quality.scoring import Scorer, means
from trainer.quality.similarity import SpeakerEncoder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    return tiny_whisper(root / "whisper"), tiny_wavlm_xvector(root / "wavlm")


def _speech(name: str):
    samples, rate = sf.read(str(DEMO / "audio" / name), dtype="float32")
    return samples, rate


def test_error_rates_ignore_case_and_punctuation_and_count_words_and_characters() -> None:
    assert error_rates("Please close the window.", "please close the window") == (0.0, 0.0)
    wer, cer = error_rates("please close the window", "please close a window")
    assert wer == pytest.approx(0.25)
    assert cer == pytest.approx(3 / len("please close the window"))
    assert error_rates("words", "") == (1.0, 1.0)


def test_a_tiny_whisper_transcribes_real_speech_into_scored_text(models) -> None:
    samples, rate = _speech("us_male/00.flac")
    heard = Transcriber(str(models[0])).transcribe(samples, rate, max_new_tokens=8)
    assert isinstance(heard, str)
    scores = Scorer(Transcriber(str(models[0]))).score("The kettle whistled on the stove.", samples, rate, None)
    assert scores["wer"] >= 0 and scores["cer"] >= 0 and "speaker_similarity" not in scores


def test_speaker_similarity_is_one_for_the_same_clip_and_lower_for_another_voice(models) -> None:
    enc = SpeakerEncoder(str(models[1]))
    a, ra = _speech("us_male/00.flac")
    b, rb = _speech("gb_female/00.flac")
    assert enc.similarity(a, ra, a, ra) == pytest.approx(1.0, abs=1e-5)
    assert enc.similarity(a, ra, b, rb) < 0.99999


def test_means_cover_only_the_clips_that_have_a_score() -> None:
    rows = [{"wer": 0.5, "speaker_similarity": 0.9}, {"wer": 0.0}, {}]
    assert means(rows) == {"wer": 0.25, "speaker_similarity": 0.9}


def test_evaluate_scores_a_folder_of_synthesized_clips_into_its_index(tiny_ckpt, models, tmp_path, capsys) -> None:
    import json

    from trainer.__main__ import main

    model_dir, codec_dir = tiny_ckpt
    prompts = tmp_path / "p.jsonl"
    ref = DEMO / "audio" / "us_male" / "01.flac"
    prompts.write_text(json.dumps({"text": "Close the window.", "reference_audio": str(ref),
                                   "reference_text": "Please close the window."}) + "\n"
                       + json.dumps({"text": "Good morning."}) + "\n")
    out = tmp_path / "clips"
    assert main(["synthesize", "--model_path", str(model_dir), "--audio_tokenizer_path", str(codec_dir),
                 "--input", str(prompts), "--output_dir", str(out), "--max_synthesis_seconds", "1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--samples_dir", str(out), "--asr_model_path", str(models[0]),
                 "--speaker_model_path", str(models[1])]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert all("wer" in r and "cer" in r and "transcript" in r for r in rows)
    assert "speaker_similarity" in rows[0] and "speaker_similarity" not in rows[1]  # no reference, no similarity
    assert summary["clips"] == 2 and summary["speaker_similarity"] == pytest.approx(rows[0]["speaker_similarity"],
                                                                                     abs=1e-4)


def test_evaluate_without_a_model_or_an_index_exits_2(tmp_path, capsys) -> None:
    from trainer.__main__ import main

    assert main(["evaluate", "--samples_dir", str(tmp_path)]) == 2
    assert "--samples_dir / SAMPLES_DIR" in capsys.readouterr().err
    (tmp_path / "samples.jsonl").write_text("")
    assert main(["evaluate", "--samples_dir", str(tmp_path)]) == 2
    assert "ASR_MODEL_PATH" in capsys.readouterr().err
