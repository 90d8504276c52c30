"""`higgs-audio-trainer make-tiny-model`: a tiny random Higgs Audio v2 checkpoint, for the demo and the tests."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from trainer import errors
from trainer.model.tiny import build_tiny_checkpoint


def run(argv: Sequence[str]) -> int:
    """Write OUT/model and OUT/audio_tokenizer and print where they are."""
    parser = argparse.ArgumentParser(prog="higgs-audio-trainer make-tiny-model",
                                     description="Write OUT/model and OUT/audio_tokenizer (random weights).")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--hidden_size", type=int, default=32)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--num_codebooks", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(list(argv))
    model_dir, codec_dir = build_tiny_checkpoint(
        ns.out, hidden_size=ns.hidden_size, num_layers=ns.num_layers, num_codebooks=ns.num_codebooks, seed=ns.seed
    )
    print(f"model: {model_dir}\naudio tokenizer: {codec_dir}")
    return errors.OK
