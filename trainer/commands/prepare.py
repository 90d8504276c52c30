"""`higgs-audio-trainer prepare`: check the dataset and fill the code cache, without a model or GPU job.

Run it once before a large job (for example as a Kubernetes Job on the same volume) so that the
training ranks start from a warm cache; `train` would fill what is missing itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from trainer import errors
from trainer.config.options import Config

log = logging.getLogger("trainer")


def prepare_only(cfg: Config) -> dict[str, int]:
    """Validate, encode, tokenize; print and return the counts."""
    from trainer.commands.train import check_output_dirs, setup_logging
    from trainer.encode.collator import Layout
    from trainer.encode.prepare import cache_root, open_cache, prepare_data
    from trainer.model.load import load_audio_tokenizer, load_parts

    setup_logging(cfg.train.log_level)
    # The code cache is the only output: under OUTPUT_DIR unless CACHE_DIR puts it elsewhere.
    check_output_dirs(cfg, output_dir=not cfg.data.cache_dir)
    parts = load_parts(cfg.model)
    data = prepare_data(
        cfg.data,
        evaluate=cfg.train.evaluates,
        cache=open_cache(cfg),
        tokenizer=parts.tokenizer,
        layout=Layout.from_model(parts.model_config, parts.tokenizer),
        load_codec=lambda: load_audio_tokenizer(cfg.model),
        sample_rate=parts.codec_config.sample_rate,
        # the full list of bad samples: in OUTPUT_DIR when it exists, else beside the code cache
        report_dir=Path(cfg.train.output_dir) if cfg.train.output_dir and os.path.isdir(cfg.train.output_dir)
        else cache_root(cfg),
    )
    counts = {
        "train_samples": len(data.train),
        "eval_samples": len(data.eval or []),
        "bad_samples": len(data.bad),
    }
    print(f"prepared: {counts} ; code cache: {cache_root(cfg)}")
    return counts


def run(argv: Sequence[str]) -> int:
    """`higgs-audio-trainer prepare`: the same options as `train`."""
    from trainer.config.cli import parse_train_args

    prepare_only(parse_train_args(argv, os.environ))
    return errors.OK
