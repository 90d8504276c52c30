"""Padding with length-grouped batches against plain random batches, on clips of 1 to 20 s, drawn by the trainer.

Sample lengths are what `SampleDataset.lengths()` reports for a voice-cloning sample: a reference
clip and a target clip (each 1-20 s, uniform, 25 frames/s, plus the codebooks' delay) and the text
tokens of the conversation. The batches come from the trainer itself: `trainer.commands.train.build` builds a
`HiggsAudioTrainer` as a run does (a tiny model on the bundled speech, the project's own options: length
grouping is whatever `--group_by_length` defaults to), its training set is swapped for one with these
lengths, and `get_train_dataloader` (the trainer's sampler hook, `_get_train_sampler`, and its batching)
yields each epoch's batches of sample indices. The random order is the same trainer built with
`group_by_length=false`. The fraction of real positions is real tokens / (batch size x longest sample)
summed over an epoch's batches. Also checks that every sample appears once per epoch in both orders
(grouping changes the order, not the distribution).

Target: length-grouped batches at least `--min_real_fraction` real (default 0.9); missed (length grouping off
in the project, or its sampler hook broken), the bench prints its result and exits 1.

    .venv/bin/python bench/bench_padding.py [--samples 4000] [--batch_size 8] [--epochs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

import torch
from common import config, make_checkpoint, print_result, result_only_on_stdout


class Lengths(torch.utils.data.Dataset):
    """A training set that only has lengths: its items are their own indices, so batches are lists of indices."""

    def __init__(self, lengths: list[int]) -> None:
        self._lengths = lengths

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, i: int) -> int:
        return i

    def lengths(self) -> list[int]:  # what `SampleDataset.lengths` gives the sampler hook
        return self._lengths


def lengths(n: int, codebooks: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        frames = sum(int(25 * rng.uniform(1, 20)) + 2 + codebooks - 1 for _ in range(2))
        out.append(frames + rng.randint(40, 160))
    return out


def real_fraction(batches: list[list[int]], lens: list[int]) -> float:
    real = sum(lens[i] for b in batches for i in b)
    return real / sum(max(lens[i] for i in b) * len(b) for b in batches)


def epochs_of_batches(ns: argparse.Namespace, lens: list[int], **over: str) -> tuple[Any, list[list[list[int]]]]:
    """(the trainer, `--epochs` epochs of its training batches) over `lens`, from a trainer built with `over`."""
    from trainer.commands.train import build

    work, model_dir, codec_dir = make_checkpoint(ns)
    trainer, _, _ = build(config(ns, work, model_dir, codec_dir, **over))
    trainer.train_dataset, trainer.data_collator = Lengths(lens), list
    torch.manual_seed(0)
    loader = trainer.get_train_dataloader()
    epochs = [[[int(i) for i in batch] for batch in loader] for _ in range(ns.epochs)]
    for epoch in epochs:  # each sample once per epoch
        assert sorted(i for b in epoch for i in b) == list(range(len(lens))), "an epoch lost or repeated samples"
    return trainer, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--codebooks", type=int, default=8, help="codebooks whose delay the lengths include")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--min_real_fraction", type=float, default=0.9, help="target for length-grouped batches")
    parser.add_argument("--workdir", default=None, help="keep the tiny model and cache here (default: a temp dir)")
    ns = parser.parse_args()
    result_only_on_stdout()
    # The trainer's model only has to exist: the smallest one.
    ns.hidden_size, ns.num_layers, ns.num_codebooks, ns.steps = 32, 1, 2, 1
    lens = lengths(ns.samples, ns.codebooks, seed=0)
    trainer, grouped_epochs = epochs_of_batches(ns, lens)  # the project's defaults
    grouping_on = bool(trainer.group_by_length)
    _, plain_epochs = epochs_of_batches(ns, lens, group_by_length="false")
    grouped = statistics.mean(real_fraction(e, lens) for e in grouped_epochs)
    plain = statistics.mean(real_fraction(e, lens) for e in plain_epochs)
    met = grouped >= ns.min_real_fraction
    print_result({
        "benchmark": "padding", "samples": ns.samples, "batch_size": ns.batch_size, "clip_seconds": [1, 20],
        "epochs": ns.epochs, "group_by_length_default": grouping_on,
        "sampler": type(trainer._get_train_sampler()).__name__,
        "real_fraction_length_grouped": round(grouped, 4),
        "real_fraction_random": round(plain, 4),
        "padded_positions_ratio_grouped_vs_random": round((1 - grouped) / (1 - plain), 4),
        "target": {"min_real_fraction": ns.min_real_fraction, "met": met},
    })
    if not met:
        raise SystemExit(f"target missed: {grouped:.3f} of the positions of the trainer's default batches are real, "
                         f"under {ns.min_real_fraction} (group_by_length default {grouping_on})")


if __name__ == "__main__":
    main()
