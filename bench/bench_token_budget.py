"""Training tokens per second with token-budget micro-batches against fixed-size ones, on length-skewed clips.

The bundled speech is made length-skewed: each training sample's audio is cropped or tiled to a drawn
length, 80% of the clips 1-3 s and 20% of them 10-20 s (25 frames/s), so that most of the data is short and
the batch size a fixed-count run can afford is set by the few long clips. Both sides come from the trainer
itself (`trainer.commands.train.build` and `get_train_dataloader`, one epoch of its micro-batches):

- budget: `--max_tokens_per_batch B`;
- fixed: `--per_device_train_batch_size B // longest` with the default length grouping, the largest fixed
  count whose longest batch stays within the same B padded tokens (the memory a device would need).

Each micro-batch is one step of the hand-written training step of `bench_trainer_overhead.py` (the
Trainer's model, optimizer, loss and clipping, on copies of the same weights), the two sides' steps taken in
turn so that a shared machine's load falls on both. Tokens per second counts the samples' own tokens (not
padding) over the summed step time. Not an option of `bench_cpu_step.py`: that bench times step variants on
the same batches, and here the batches are what differs.

The bench exits 1 if a budget micro-batch holds more than B padded tokens or an epoch of either side does not
draw every sample exactly once.

    .venv/bin/python bench/bench_token_budget.py [--samples 96] [--budget 4096] [--hidden_size 512]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from typing import Any

import numpy as np
import torch
from bench_trainer_overhead import hand_step_for
from common import add_model_args, config, make_checkpoint, print_result, result_only_on_stdout


def skewed(samples: list[Any], n: int, seed: int) -> list[Any]:
    """`n` samples cycled from `samples`, each clip's codes cropped or tiled to a drawn, skewed length."""
    rng = random.Random(seed)
    out = []
    used: set[tuple[int, int]] = set()
    for j in range(n):
        s = samples[j % len(samples)]
        frames = 0
        while frames == 0 or (j % len(samples), frames) in used:  # equal tokens could not be told apart
            frames = int(25 * (rng.uniform(1, 3) if rng.random() < 0.8 else rng.uniform(10, 20)))
        used.add((j % len(samples), frames))
        codes = [np.resize(c, (c.shape[0], frames)) for c in s.codes]  # tiles along time, then crops
        out.append(dataclasses.replace(s, id=f"{s.id}-{j}", codes=codes))
    return out


def epoch(trainer: Any, dataset: Any) -> list[dict[str, torch.Tensor]]:
    """One epoch of the trainer's training micro-batches over `dataset`."""
    trainer.train_dataset = dataset
    return list(trainer.get_train_dataloader())


def drawn(batches: list[dict[str, torch.Tensor]], dataset: Any) -> list[int]:
    """The sample indices an epoch's batches hold, matched by their tokens."""
    index = {dataset[i]["input_ids"].tobytes(): i for i in range(len(dataset))}
    return sorted(index[r[m].numpy().astype("int64").tobytes()]
                  for b in batches for r, m in zip(b["input_ids"], b["attention_mask"].bool(), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--budget", type=int, default=4096, help="--max_tokens_per_batch of the budget side")
    ns = parser.parse_args()
    result_only_on_stdout()
    from trainer.encode.collator import SampleDataset

    work, model_dir, codec_dir = make_checkpoint(ns)
    from trainer.commands.train import build

    budget_trainer, _, _ = build(config(ns, work, model_dir, codec_dir, max_tokens_per_batch=str(ns.budget)))
    base = budget_trainer.train_dataset
    data = SampleDataset(skewed(base.samples, ns.samples, seed=0), base.layout, base.text_labels)
    longest = max(data.lengths())
    fixed_size = max(ns.budget // longest, 1)
    fixed_trainer, _, _ = build(config(ns, work, model_dir, codec_dir, per_device_train_batch_size=str(fixed_size),
                                       output_dir=str(work / "out-fixed")))
    sides = {"budget": epoch(budget_trainer, data), "fixed": epoch(fixed_trainer, data)}
    problems = [f"{name}: an epoch lost or repeated samples" for name, batches in sides.items()
                if drawn(batches, data) != list(range(len(data)))]
    over = [b["input_ids"].numel() for b in sides["budget"] if b["input_ids"].numel() > ns.budget]
    if over:
        problems.append(f"budget: {len(over)} micro-batches over {ns.budget} padded tokens (largest {max(over)})")

    steps = {name: hand_step_for(budget_trainer, len(batches)) for name, batches in sides.items()}
    steps["fixed"].model.load_state_dict(steps["budget"].model.state_dict())
    seconds = {name: 0.0 for name in sides}
    for i in range(max(len(b) for b in sides.values())):  # in turn, a different side first each round
        names = list(sides) if i % 2 == 0 else list(sides)[::-1]
        for name in names:
            if i < len(sides[name]):
                seconds[name] += steps[name](sides[name][i])
    real = {name: sum(int(b["attention_mask"].sum()) for b in batches) for name, batches in sides.items()}
    padded = {name: sum(b["input_ids"].numel() for b in batches) for name, batches in sides.items()}
    rate = {name: real[name] / seconds[name] for name in sides}
    print_result({
        "benchmark": "token_budget", "threads": torch.get_num_threads(), "samples": len(data),
        "model": {"hidden_size": ns.hidden_size, "layers": ns.num_layers, "codebooks": ns.num_codebooks},
        "budget_tokens": ns.budget, "longest_sample_tokens": longest, "shortest_sample_tokens": min(data.lengths()),
        "fixed_batch_size": fixed_size,
        "micro_batches_per_epoch": {name: len(b) for name, b in sides.items()},
        "samples_per_micro_batch": {name: [min(len(b["input_ids"]) for b in bs), max(len(b["input_ids"]) for b in bs)]
                                    for name, bs in sides.items()},
        "largest_padded_tokens": {name: max(b["input_ids"].numel() for b in bs) for name, bs in sides.items()},
        "real_fraction": {name: round(real[name] / padded[name], 4) for name in sides},
        "epoch_step_seconds": {name: round(s, 2) for name, s in seconds.items()},
        "tokens_per_second": {name: round(r, 1) for name, r in rate.items()},
        "tokens_per_second_ratio_budget_vs_fixed": round(rate["budget"] / rate["fixed"], 3),
        "problems": problems,
    })
    if problems:
        raise SystemExit("; ".join(problems))


if __name__ == "__main__":
    main()
