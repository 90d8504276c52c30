"""`higgs-audio-trainer evaluate`: word/character error rates and speaker similarity of generated clips.

    higgs-audio-trainer evaluate --samples_dir clips/ --asr_model_path whisper/ --speaker_model_path wavlm-sv/

Reads the folder's `samples.jsonl` (written by `synthesize --input` and by the samples taken while training),
scores every clip with the local models given, writes the scores back into `samples.jsonl` and prints
their means and corpus rates. Both models are optional; at least one is needed. docs/synthesis.md says which
checkpoints reproduce the published protocol.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from trainer import errors
from trainer.config.values import label
from trainer.errors import AudioError, ConfigError

OPTIONS = ("samples_dir", "asr_model_path", "speaker_model_path", "language", "strip_diacritics", "log_level")


def run(argv: Sequence[str]) -> int:
    """`higgs-audio-trainer evaluate`: score a folder of generated clips; returns the exit code."""
    from trainer.config.cli import parse_command_args
    from trainer.data.audio import audio_info, load_audio
    from trainer.generate.wav import INDEX, read_index, write_index
    from trainer.quality.intelligibility import ASR_OPTION, check_asr_dir
    from trainer.quality.scoring import Scorer, corpus_rates, means
    from trainer.quality.similarity import SPEAKER_OPTION, check_speaker_dir

    cfg = parse_command_args(argv, os.environ, "higgs-audio-trainer evaluate", OPTIONS,
                             "Score generated clips: error rates and speaker similarity.", ("samples_dir",))
    q, s = cfg.quality, cfg.synthesis
    d = s.samples_dir
    if not d:
        raise ConfigError(f"{label('samples_dir')}: required, not set (a folder with samples.jsonl)")
    if not (Path(d) / INDEX).is_file():
        raise ConfigError(f"{label('samples_dir')} ({d}): no {INDEX}; expected a folder written by "
                          "synthesize --input or OUTPUT_DIR/samples/step-N of a training run")
    if not (q.asr_model_path or q.speaker_model_path):
        raise ConfigError(f"{ASR_OPTION} or {SPEAKER_OPTION}: give at least one model directory (nothing to "
                          "compute without)")
    if s.language is not None:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES

        from trainer.quality.normalize import language_code

        if language_code(s.language) not in LANGUAGES:
            raise ConfigError(f"{label('language')}: unknown language {s.language!r}; expected a Whisper language "
                              "code or name (en, zh, ar, french, ...)")
    if q.asr_model_path:
        check_asr_dir(q.asr_model_path)
    if q.speaker_model_path:
        check_speaker_dir(q.speaker_model_path)
    try:
        rows = read_index(d)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{label('samples_dir')}: {Path(d) / INDEX} is not JSON lines: {err}") from None
    import soundfile as sf

    scorer = Scorer.load(q.asr_model_path, q.speaker_model_path, s.language, s.strip_diacritics)
    for lineno, row in enumerate(rows, start=1):
        path = Path(d) / str(row.get("file"))
        try:
            rate = audio_info(path)[1]
            # (frames, channels) as stored: each model mixes to mono and resamples to its own rate itself
            samples, _ = sf.read(str(path), dtype="float32", always_2d=True)
        except (AudioError, sf.SoundFileError, RuntimeError) as err:
            raise ConfigError(f"{Path(d) / INDEX} (clip {lineno}): {err}") from None
        reference = None
        if row.get("reference_audio") and scorer.speakers is not None:
            try:
                reference = (load_audio(row["reference_audio"], rate), rate)
            except AudioError as err:
                raise ConfigError(f"{Path(d) / INDEX} (clip {lineno}): reference of {row['file']}: {err}") from None
        row.update(scorer.score(str(row.get("text", "")), samples, rate, reference))
    write_index(d, rows)
    summary = {**means(rows), **corpus_rates(rows)}
    out = {"clips": len(rows), **{k: round(v, 4) for k, v in summary.items()}}
    if scorer.transcriber is not None:
        out["text_normalizer"] = scorer.rules.describe()
    print(json.dumps(out))
    return errors.OK
