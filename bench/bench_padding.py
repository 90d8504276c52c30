"""Padding with length-grouped batches against plain random batches, on clips of 1 to 20 s.

Sample lengths are what `SampleDataset.lengths()` reports for a voice-cloning sample: a reference
clip and a target clip (each 1-20 s, uniform, 25 frames/s, plus the codebooks' delay) and the text
tokens of the conversation. Orders come from the trainer's own samplers (`HiggsAudioTrainer
._get_train_sampler` uses transformers' `LengthGroupedSampler`); the fraction of real positions is
real tokens / (batch size x longest sample) summed over an epoch's batches. Also checks that every
sample appears once per epoch in both orders (grouping changes the order, not the distribution).

    .venv/bin/python bench/bench_padding.py [--samples 4000] [--batch_size 8] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics

import torch
from torch.utils.data import RandomSampler
from transformers.trainer_pt_utils import LengthGroupedSampler


def lengths(n: int, codebooks: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        frames = sum(int(25 * rng.uniform(1, 20)) + 2 + codebooks - 1 for _ in range(2))
        out.append(frames + rng.randint(40, 160))
    return out


def real_fraction(order: list[int], lens: list[int], batch: int) -> float:
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    real = sum(lens[i] for b in batches for i in b)
    return real / sum(max(lens[i] for i in b) * len(b) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--codebooks", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    ns = parser.parse_args()
    lens = lengths(ns.samples, ns.codebooks, seed=0)
    torch.manual_seed(0)
    grouped, plain = [], []
    for _ in range(ns.epochs):
        g = list(iter(LengthGroupedSampler(ns.batch_size, lengths=lens)))
        p = list(iter(RandomSampler(range(len(lens)))))
        assert sorted(g) == sorted(p) == list(range(len(lens)))  # each sample once per epoch
        grouped.append(real_fraction(g, lens, ns.batch_size))
        plain.append(real_fraction(p, lens, ns.batch_size))
    print(json.dumps({
        "benchmark": "padding", "samples": ns.samples, "batch_size": ns.batch_size, "clip_seconds": [1, 20],
        "real_fraction_length_grouped": round(statistics.mean(grouped), 4),
        "real_fraction_random": round(statistics.mean(plain), 4),
        "padded_positions_ratio_grouped_vs_random": round(
            (1 - statistics.mean(grouped)) / (1 - statistics.mean(plain)), 4),
    }, indent=2))


if __name__ == "__main__":
    main()
