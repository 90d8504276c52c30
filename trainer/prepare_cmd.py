"""`higgs-audio-trainer prepare`: check the dataset and fill the code cache, without a model or GPU job.

Run it once before a large job (for example as a Kubernetes Job on the same volume) so that the
training ranks start from a warm cache; `train` would fill what is missing itself.
"""

from __future__ import annotations

import logging

from trainer.config import Config

log = logging.getLogger("trainer")


def prepare_only(cfg: Config) -> dict[str, int]:
    """Validate, encode, tokenize; print and return the counts."""
    from transformers import AutoConfig

    from trainer.collator import Layout
    from trainer.model import check_model_dirs, check_vocabulary, load_audio_tokenizer, load_text_tokenizer
    from trainer.prepare import cache_root, prepare_data
    from trainer.run import check_output_dirs, setup_logging

    setup_logging(cfg.train.log_level)
    # The code cache is the only output: under OUTPUT_DIR unless CACHE_DIR puts it elsewhere.
    check_output_dirs(cfg, output_dir=not cfg.data.cache_dir)
    check_model_dirs(cfg.model)
    tokenizer = load_text_tokenizer(cfg.model)
    model_config = AutoConfig.from_pretrained(cfg.model.model_path)
    codec_config = AutoConfig.from_pretrained(cfg.model.audio_tokenizer_path)
    check_vocabulary(model_config, tokenizer, codec_config)
    data = prepare_data(
        cfg,
        tokenizer=tokenizer,
        layout=Layout.from_model(model_config, tokenizer),
        load_codec=lambda: load_audio_tokenizer(cfg.model),
        sample_rate=codec_config.sample_rate,
    )
    counts = {
        "train_samples": len(data.train),
        "eval_samples": len(data.eval or []),
        "bad_samples": len(data.bad),
    }
    print(f"prepared: {counts} ; code cache: {cache_root(cfg)}")
    return counts
