"""trainer.data.audio on real files: the bundled espeak-ng clips and files written here with soundfile."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from trainer.data.audio import audio_info, load_audio
from trainer.errors import AudioError

REPO = Path(__file__).resolve().parents[3]
CLIP = REPO / "examples" / "demo_data" / "audio" / "us_male" / "00.flac"


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_audio_info_reads_the_header_of_a_real_clip():
    duration, rate = audio_info(CLIP)
    assert rate == 24000
    assert duration == pytest.approx(sf.info(str(CLIP)).frames / 24000)
    assert 1.0 < duration < 3.0


def test_load_audio_at_the_file_rate_returns_every_sample_unchanged():
    samples = load_audio(CLIP, 24000)
    reference, _ = sf.read(str(CLIP), dtype="float32")
    assert samples.dtype == np.float32 and samples.ndim == 1 and samples.flags.c_contiguous
    np.testing.assert_array_equal(samples, reference)
    assert np.abs(samples).max() > 0.5  # real speech, normalised to -1 dBFS


def test_load_audio_resamples_real_speech_to_the_target_rate():
    frames = sf.info(str(CLIP)).frames
    samples = load_audio(CLIP, 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) == math.ceil(frames * 16000 / 24000)


def test_stereo_44k_wav_is_mixed_to_mono_and_resampled(tmp_path):
    tone = _tone(1.0, 44100)
    stereo, mono = tmp_path / "stereo.wav", tmp_path / "mono.wav"
    sf.write(stereo, np.stack([tone, tone], axis=1), 44100, subtype="PCM_16")
    sf.write(mono, tone, 44100, subtype="PCM_16")
    assert sf.info(str(stereo)).channels == 2

    from_stereo = load_audio(stereo, 24000)
    assert len(from_stereo) == 24000  # one second at the target rate
    np.testing.assert_array_equal(from_stereo, load_audio(mono, 24000))
    # The tone survives resampling at its own frequency.
    spectrum = np.abs(np.fft.rfft(from_stereo))
    assert np.argmax(spectrum) * 24000 / len(from_stereo) == pytest.approx(440, abs=2)


def test_channels_are_averaged(tmp_path):
    left, right = _tone(0.2, 24000, 300), _tone(0.2, 24000, 700)
    path = tmp_path / "two.wav"
    sf.write(path, np.stack([left, right], axis=1), 24000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 24000), (left + right) / 2, atol=1e-7)


def test_ogg_vorbis_is_decoded(tmp_path):
    path = tmp_path / "tone.ogg"
    sf.write(path, _tone(0.5, 24000), 24000, format="OGG", subtype="VORBIS")
    assert audio_info(path) == (pytest.approx(0.5, abs=0.01), 24000)
    assert len(load_audio(path, 24000)) == pytest.approx(12000, abs=240)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    for call in (lambda: audio_info(path), lambda: load_audio(path, 24000)):
        with pytest.raises(AudioError) as info:
            call()
        assert info.value.path == str(path)
        assert info.value.reason == "file not found"
        assert str(info.value) == f"{path}: file not found"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "Format not recognised"), (b"RIFF\x00\x01garbage" * 100, "")],
    ids=["empty-file", "garbage"],
)
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    for call in (lambda: audio_info(path), lambda: load_audio(path, 24000)):
        with pytest.raises(AudioError) as info:
            call()
        assert info.value.reason.startswith("unreadable audio: ")
        assert message in info.value.reason
        assert str(info.value).startswith(f"{path}: unreadable audio")


def test_truncated_flac_passes_the_header_check_but_not_decoding(tmp_path):
    data = CLIP.read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 2])
    audio_info(path)  # the header is intact; only decoding finds the damage
    with pytest.raises(AudioError, match="unreadable audio"):
        load_audio(path, 24000)


def test_a_wav_with_no_frames_is_empty(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 24000)
    for call in (lambda: audio_info(path), lambda: load_audio(path, 24000)):
        with pytest.raises(AudioError) as info:
            call()
        assert info.value.reason == "empty audio"


def test_non_finite_samples_are_rejected(tmp_path):
    samples = _tone(0.1, 24000)
    samples[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, samples, 24000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(path, 24000)


def test_a_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="is a directory"):
        audio_info(tmp_path)


def test_audio_error_survives_pickling():
    # Data-loader workers send exceptions to the main process by pickling them.
    err = pickle.loads(pickle.dumps(AudioError("/data/a.wav", "empty audio")))
    assert (err.path, err.reason, str(err)) == ("/data/a.wav", "empty audio", "/data/a.wav: empty audio")


def test_target_rate_must_be_positive():
    with pytest.raises(ValueError, match="target_rate"):
        load_audio(CLIP, 0)


def test_importing_the_module_does_not_import_torch():
    code = "import sys, trainer.data.audio; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
