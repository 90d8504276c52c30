"""`higgs-audio-trainer evaluate`: word/character error rates and speaker similarity of generated clips.

    higgs-audio-trainer evaluate --samples_dir clips/ --asr_model_path whisper/ --speaker_model_path wavlm-sv/

Reads the folder's `samples.jsonl` (written by `synthesize --input` and by the samples taken while training),
scores every clip with the local models given, writes the scores back into `samples.jsonl` and prints
their means. Both models are optional; at least one is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from trainer import errors
from trainer.errors import AudioError, ConfigError

OPTIONS = ("samples_dir", "asr_model_path", "speaker_model_path", "log_level")


def run(argv: Sequence[str]) -> int:
    from trainer.config.cli import parse_command_args
    from trainer.data.audio import load_audio
    from trainer.generate.wav import INDEX, read_index, write_index
    from trainer.quality.intelligibility import check_model_dir
    from trainer.quality.scoring import Scorer, means

    cfg = parse_command_args(argv, os.environ, "higgs-audio-trainer evaluate", OPTIONS,
                             "Score generated clips: error rates and speaker similarity.", ("samples_dir",))
    q, d = cfg.quality, cfg.synthesis.samples_dir
    if not d:
        raise ConfigError("--samples_dir / SAMPLES_DIR: required, not set (a folder with samples.jsonl)")
    if not (Path(d) / INDEX).is_file():
        raise ConfigError(f"--samples_dir / SAMPLES_DIR ({d}): no {INDEX}; expected a folder written by "
                          "synthesize --input or OUTPUT_DIR/samples/step-N of a training run")
    if not (q.asr_model_path or q.speaker_model_path):
        raise ConfigError("--asr_model_path / ASR_MODEL_PATH or --speaker_model_path / SPEAKER_MODEL_PATH: give at "
                          "least one model directory (nothing to compute without)")
    for option, path in (("--asr_model_path / ASR_MODEL_PATH", q.asr_model_path),
                         ("--speaker_model_path / SPEAKER_MODEL_PATH", q.speaker_model_path)):
        if path:
            check_model_dir(path, option)
    try:
        rows = read_index(d)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"--samples_dir / SAMPLES_DIR: {Path(d) / INDEX} is not JSON lines: {err}") from None
    scorer = Scorer.load(q.asr_model_path, q.speaker_model_path)
    import soundfile as sf

    for row in rows:
        path = Path(d) / row["file"]
        try:
            samples, rate = sf.read(str(path), dtype="float32")
        except (sf.SoundFileError, RuntimeError) as err:
            raise ConfigError(f"{Path(d) / INDEX}: clip {path} unreadable: {err}") from None
        reference = None
        if row.get("reference_audio") and scorer.speakers is not None:
            try:
                reference = (load_audio(row["reference_audio"], rate), rate)
            except AudioError as err:
                raise ConfigError(f"{Path(d) / INDEX}: reference of {row['file']}: {err}") from None
        row.update(scorer.score(row["text"], samples, rate, reference))
    write_index(d, rows)
    summary = means(rows)
    print(json.dumps({"clips": len(rows), **{k: round(v, 4) for k, v in summary.items()}}))
    return errors.OK
