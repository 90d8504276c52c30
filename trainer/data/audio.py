"""Reading audio files for training, with one error type that names the file.

Decoding goes through soundfile (libsndfile: WAV, FLAC, OGG, MP3) because torchaudio's own loaders are
deprecated. torch is imported only inside `load_audio`, where resampling needs it, so that checking a
dataset's headers (`audio_info`) stays fast and torch-free.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf

from trainer.errors import AudioError


def _libsndfile_message(err: Exception) -> str:
    """The libsndfile text without soundfile's "Error opening 'path': " prefix (the path is ours)."""
    message = getattr(err, "error_string", None) or str(err)
    return message.strip().rstrip(".") or type(err).__name__


def _check_is_file(path: str) -> None:
    if not os.path.exists(path):
        raise AudioError(path, "file not found")
    if os.path.isdir(path):
        raise AudioError(path, "unreadable audio: is a directory")


def audio_info(path: str | os.PathLike[str]) -> tuple[float, int]:
    """Duration in seconds and sample rate, read from the file header only.

    Validating a whole dataset calls this once per clip, so it must not decode the audio. A file whose
    header is fine but whose body is damaged (a truncated FLAC) passes here and fails in `load_audio`.

    Raises:
        AudioError: The file does not exist, is not audio libsndfile can open, or has no frames.
    """
    path = os.fspath(path)
    try:
        # Opening reads the header alone; `sf.info` would also format libsndfile's whole description of
        # the file, which costs as much again as the open (bench/bench_data_read.py).
        with sf.SoundFile(path) as f:
            frames, rate = f.frames, f.samplerate
    except (sf.SoundFileError, RuntimeError) as err:
        _check_is_file(path)  # only now: on the good path the open itself says the file is there
        raise AudioError(path, f"unreadable audio: {_libsndfile_message(err)}") from err
    if frames <= 0 or rate <= 0:
        raise AudioError(path, "empty audio")
    return frames / rate, int(rate)


def load_audio(
    path: str | os.PathLike[str], target_rate: int, offset: float = 0.0, duration: float | None = None
) -> np.ndarray:
    """Decode a file, or a segment of it, to one mono float32 channel at `target_rate`.

    The segment is `offset` .. `offset + duration` seconds.

    Channels are averaged (a stereo file with identical channels equals its mono version) and the rate
    is converted with `torchaudio.functional.resample`, the resampler the audio tokenizer's own examples
    use.

    Args:
        path (`str | os.PathLike[str]`):
            A WAV, FLAC, OGG (or other libsndfile format) file.
        target_rate (`int`):
            Sample rate of the returned samples, in Hz.
        offset (`float`, *optional*):
            Where the segment starts, in seconds from the start of the file.
        duration (`float`, *optional*):
            How long the segment is, in seconds; None reads to the end of the file.

    Returns:
        A contiguous 1-D float32 array in [-1, 1] for integer formats.

    Raises:
        AudioError: Missing, unreadable or empty file, or NaN/inf samples.
    """
    if target_rate <= 0:
        raise ValueError(f"target_rate must be positive, got {target_rate}")
    path = os.fspath(path)
    _check_is_file(path)
    try:
        if offset or duration is not None:
            rate = sf.info(path).samplerate
            frames = -1 if duration is None else max(1, round(duration * rate))
            samples, rate = sf.read(path, start=round(offset * rate), frames=frames, dtype="float32", always_2d=True)
        else:
            samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(path, f"unreadable audio: {_libsndfile_message(err)}") from err
    if samples.shape[0] == 0:
        raise AudioError(path, "empty audio")
    if not np.isfinite(samples).all():
        raise AudioError(path, "audio holds NaN or infinite samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if rate != target_rate:
        import torch
        import torchaudio.functional

        mono = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(mono)), rate, target_rate)
        mono = mono.numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)
