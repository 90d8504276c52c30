"""Our full training step against a minimal hand-written PyTorch loop: the same model, batches and optimizer.

Ours: `HiggsAudioTrainer` with its callbacks, collator, loss, logging and gradient clipping, built by
`trainer.run.build` exactly as a run builds it. The baseline: the same initial weights, the same
collated batches in the same order, the same optimizer class and settings, the same loss function and
clipping, in a bare `for` loop. Rounds alternate between the two so machine noise hits both alike.
Prints JSON: median step seconds of each and `throughput_ratio` = baseline step time / ours (1.0 means
no overhead; the target is at least 0.95).

    .venv/bin/python bench/bench_trainer_overhead.py [--steps 20] [--rounds 3] [--hidden_size 512 ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from common import StepClock, add_model_args, config, make_checkpoint, median_after_warmup


def hand_loop(
    model: torch.nn.Module, batches: list[dict], opt_cls, opt_kwargs: dict, layout, clip: float
) -> list[float]:
    from trainer.training import audio_codebook_losses

    model.train()
    optimizer = opt_cls([p for p in model.parameters() if p.requires_grad], **opt_kwargs)
    times = []
    for batch in batches:
        start = time.perf_counter()
        inputs = {k: v for k, v in batch.items() if k != "audio_labels"}
        out = model(**inputs)
        sums, counts = audio_codebook_losses(out.logits, batch["input_ids"], batch["audio_input_ids_mask"],
                                             batch["audio_labels"], layout)
        loss = (sums / counts.clamp(min=1)).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--rounds", type=int, default=3)
    ns = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work, model_dir, codec_dir = make_checkpoint(ns)
    from trainer.run import build

    ours_all, base_all = [], []
    for _ in range(ns.rounds):
        cfg = config(ns, work, model_dir, codec_dir)
        trainer, _, _ = build(cfg)
        initial = copy.deepcopy(trainer.model).cpu()
        batches = []
        for batch in trainer.get_train_dataloader():
            batches.append({k: v.clone() for k, v in batch.items()})
            if len(batches) == ns.steps:
                break
        clock = StepClock()
        trainer.add_callback(clock.callback)
        trainer.train()
        ours_all.append(median_after_warmup(clock.times()))
        opt_cls, opt_kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
        opt_kwargs = {k: v for k, v in opt_kwargs.items() if k != "params"} | {"lr": trainer.args.learning_rate}
        base_all.append(median_after_warmup(hand_loop(initial, batches, opt_cls, opt_kwargs, trainer.layout,
                                                      trainer.args.max_grad_norm)))
    ours, base = statistics.median(ours_all), statistics.median(base_all)
    params = sum(p.numel() for p in trainer.model.parameters())
    print(json.dumps({
        "benchmark": "trainer_overhead", "device": "cpu", "threads": torch.get_num_threads(),
        "model": {"hidden_size": ns.hidden_size, "layers": ns.num_layers, "codebooks": ns.num_codebooks,
                  "parameters": params},
        "batch_size": ns.batch_size, "steps": ns.steps, "rounds": ns.rounds,
        "ours_step_seconds": round(ours, 4), "baseline_step_seconds": round(base, 4),
        "throughput_ratio": round(base / ours, 3),
        "per_round": {"ours": [round(x, 4) for x in ours_all], "baseline": [round(x, 4) for x in base_all]},
    }, indent=2))


if __name__ == "__main__":
    main()
