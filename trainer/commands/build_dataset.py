"""`higgs-audio-trainer build-dataset`: long recordings -> a training set that `train` and `prepare` read.

    higgs-audio-trainer build-dataset --recordings_dir raw/ --dataset_dir data/ [--asr_model_path whisper/]

Steps, each with a progress bar and resumable (`trainer.recordings.steps`): segment (voice activity), transcribe
(NAME.txt beside NAME.wav, else the recognizer), cut (filters, clips written); then references, `train.json` and
`build-report.json` with a summary. An unreadable or empty recording, or a script whose lines do not match its
utterances, is a bad sample: all of them are reported and the command exits with code 3, or with
--skip_bad_samples they are counted and left out (docs/bring-your-data.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from trainer import errors
from trainer.config.values import label
from trainer.errors import BadSamplesError, ConfigError, DataError

OPTIONS = (
    "recordings_dir", "dataset_dir", "min_seconds", "max_seconds", "min_pause_seconds", "min_rms_db",
    "min_chars_per_second", "max_chars_per_second", "reference_pool", "reference_max_seconds", "workers",
    "asr_model_path", "skip_bad_samples", "log_level",
)


def run(argv: Sequence[str]) -> int:
    """`higgs-audio-trainer build-dataset`: long recordings -> a training set; returns the exit code."""
    from trainer.config.cli import parse_command_args

    cfg = parse_command_args(argv, os.environ, "higgs-audio-trainer build-dataset", OPTIONS,
                             "Build a training set from long recordings.", ("recordings_dir", "dataset_dir"))
    logging.basicConfig(level=cfg.train.log_level.upper(), format="%(message)s")
    b = cfg.build
    for flag, value in ((label("recordings_dir"), b.recordings_dir),
                        (label("dataset_dir"), b.dataset_dir)):
        if not value:
            raise ConfigError(f"{flag}: required, not set")
    assert b.recordings_dir and b.dataset_dir
    if not os.path.isdir(b.recordings_dir):
        raise ConfigError(f"{label('recordings_dir')}: not a directory: {b.recordings_dir}")
    if b.min_seconds >= b.max_seconds:
        raise ConfigError(f"--min_seconds ({b.min_seconds:g}) must be below --max_seconds ({b.max_seconds:g})")
    if cfg.quality.asr_model_path:
        from trainer.quality.intelligibility import check_model_dir

        check_model_dir(cfg.quality.asr_model_path, label("asr_model_path"))
    print(build(cfg))
    return errors.OK


def build(cfg) -> str:  # cfg: trainer.config.options.Config
    """Run every step; return the summary. Raises BadSamplesError (exit 3) for unusable recordings unless skipping."""
    from trainer.data.load import format_bad_samples
    from trainer.data.samples import BadSample
    from trainer.recordings import dataset, steps
    from trainer.recordings.measure import Limits

    b = cfg.build
    out = os.path.abspath(b.dataset_dir)
    os.makedirs(out, exist_ok=True)
    recordings = steps.discover(b.recordings_dir)
    if not recordings:
        raise DataError(f"{b.recordings_dir}: no audio files at its top level or one folder down")
    limits = Limits(b.min_seconds, b.max_seconds, b.min_rms_db, b.min_chars_per_second, b.max_chars_per_second)
    settings = steps.Settings(limits, b.min_pause_seconds, cfg.quality.asr_model_path, out)
    segs = steps.run_step("segment", recordings, steps.segment, [() for _ in recordings], settings, b.workers)
    bad = [BadSample(r.path, segs[r.key]["error"]) for r in recordings if "error" in segs[r.key]]
    usable = [r for r in recordings if "error" not in segs[r.key]]
    texts = steps.run_step("transcribe", usable, steps.transcribe, [(segs[r.key],) for r in usable], settings,
                           b.workers)
    mismatched = [r for r in usable if texts[r.key].get("reason") == "transcript_mismatch"]
    bad += [BadSample(texts[r.key]["file"], texts[r.key]["error"]) for r in usable if "error" in texts[r.key]]
    usable = [r for r in usable if "error" not in texts[r.key]]
    if bad and not cfg.data.skip_bad_samples:
        raise BadSamplesError(format_bad_samples(bad) + "\nFix these recordings, or pass --skip_bad_samples "
                              "(SKIP_BAD_SAMPLES=true) to leave them out.")
    if bad:
        logging.getLogger("trainer").warning("leaving out unusable recordings (--skip_bad_samples):\n%s",
                                             format_bad_samples(bad))
    cuts = steps.run_step("cut", usable, steps.cut, [(segs[r.key], texts[r.key]) for r in usable], settings,
                          b.workers)
    kept: dict[str, list[dict]] = {}
    for r in usable:
        kept.setdefault(r.speaker, []).extend(cuts[r.key]["clips"])
    kept = {s: c for s, c in kept.items() if c}
    train = dataset.samples(kept, b.reference_pool, cfg.data.reference_max_seconds)
    rows = [{"speaker": r.speaker, "seconds": segs[r.key]["seconds"], "rejects": _rejects(cuts, texts, segs, r)}
            for r in usable + mismatched]
    rep = dataset.report(rows, kept, [str(x) for x in bad], train)
    dataset.write_json(os.path.join(out, "build-report.json"), rep)
    if not train:
        raise DataError(f"{b.recordings_dir}: no clip passed the filters; see {os.path.join(out, 'build-report.json')}")
    dataset.write_json(os.path.join(out, "train.json"), train)
    return dataset.summary(rep) + f"\ntraining set: {os.path.join(out, 'train.json')}"


def _rejects(cuts: dict, texts: dict, segs: dict, rec) -> dict:
    """A recording's rejects by reason; a mismatched script rejects all of its utterances."""
    if rec.key in cuts:
        return cuts[rec.key]["rejects"]
    spans = segs[rec.key]["utterances"]
    return {"transcript_mismatch": [len(spans), sum(e - s for s, e in spans)]}
