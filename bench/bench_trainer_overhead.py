"""Our full training step against a minimal hand-written PyTorch loop: the same model, batches and optimizer.

Ours: `HiggsAudioTrainer` with its callbacks, collator, loss, logging and gradient clipping, built by
`trainer.commands.train.build` exactly as a run builds it, in a gloo process group of one process (the variables
`torchrun --nproc_per_node=1` sets), so the Trainer wraps the model in `DistributedDataParallel` as in
any multi-process run: DDP's gradient hooks and bucket all-reduce are part of our step. The bench
checks that the model really is DDP-wrapped and prints the settings DDP ran with (`ddp`).
The baseline: the same initial weights (a copy of the bare model, no DDP), the same optimizer class and
settings, the same loss function and clipping, in a bare step: forward, loss, backward, clip, optimizer
step, zero grad.

The two alternate step by step: after each of our steps (timed from the end of the previous pair to our
`on_step_end`, so data loading and collation, DDP and every callback count), a callback runs one
baseline step on the very batch our step trained on (`training_step` is wrapped to keep a reference to
its inputs: one Python call per step). The baseline has the Trainer's learning-rate schedule (the same
`get_scheduler` call on its own optimizer), and before any time is compared the bench checks that both sides
computed the same loss at every step and ran at the same learning rate (`losses_agree`, within
`--loss_rtol`): a Trainer that skipped its backward pass, optimizer step or scheduler would train different
weights from the second step on, and the bench exits 1 without a ratio.
Load from other processes on a shared machine changes over seconds, so pairs of adjacent steps see the
same load where whole runs of one and then the other do not. `throughput_ratio` is the median over all
pairs (after `--warmup` per round) of baseline step time / ours (1.0 means no overhead; the target is at
least 0.95, `--min_ratio`; missed, the bench exits 1 after printing); each of `--rounds` rounds builds a
fresh trainer.

`--ddp_baseline` adds, in the same pairs, the hand step on a copy wrapped in DDP with our model's
settings (wrapped after our first step, when those are known; warm-up steps are left out anyway):
`throughput_ratio_vs_ddp_baseline` is then what our Trainer costs beyond DDP, and `ddp_baseline_vs_bare`
what DDP alone costs in one process.

    .venv/bin/python bench/bench_trainer_overhead.py [--steps 20] [--rounds 2] [--ddp_baseline] [--hidden_size 512 ...]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from common import (
    add_model_args,
    config,
    ddp_settings,
    join_single_process_group,
    make_checkpoint,
    print_result,
    result_only_on_stdout,
)


class HandStep:
    """The baseline: one bare PyTorch training step, timed (on the bare model; `--ddp_baseline` adds one on a
    DDP-wrapped copy, to tell what DDP costs from what our Trainer costs)."""

    def __init__(self, model: torch.nn.Module, opt_cls: type, opt_kwargs: dict, layout: Any, clip: float,
                 schedule: Callable[[torch.optim.Optimizer], Any]) -> None:
        self.model, self.layout, self.clip = model.train(), layout, clip
        self.optimizer = opt_cls([p for p in model.parameters() if p.requires_grad], **opt_kwargs)
        self.scheduler = schedule(self.optimizer)
        self.losses: list[torch.Tensor] = []  # to show both sides trained the same weights on the same batches
        self.lrs: list[float] = []  # the learning rate each step ran at

    def __call__(self, batch: dict[str, torch.Tensor]) -> float:
        from trainer.train.losses import audio_codebook_losses

        self.lrs.append(self.scheduler.get_last_lr()[0])
        start = time.perf_counter()
        out = self.model(**{k: v for k, v in batch.items() if k != "audio_labels"})
        sums, counts = audio_codebook_losses(out.logits, batch["input_ids"], batch["audio_input_ids_mask"],
                                             batch["audio_labels"], self.layout)
        loss = (sums / counts.clamp(min=1)).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        self.losses.append(loss.detach())
        return seconds


def hand_step_for(trainer: Any, steps: int) -> HandStep:
    """A baseline on a copy of the trainer's (still bare) model with the trainer's optimizer, learning-rate
    schedule (the call `Trainer.create_scheduler` makes), loss and clipping."""
    from transformers import get_scheduler

    args = trainer.args
    opt_cls, opt_kwargs = trainer.get_optimizer_cls_and_kwargs(args, trainer.model)
    opt_kwargs = {k: v for k, v in opt_kwargs.items() if k != "params"} | {"lr": args.learning_rate}

    def schedule(optimizer: torch.optim.Optimizer) -> Any:
        return get_scheduler(args.lr_scheduler_type, optimizer=optimizer, num_training_steps=steps,
                             num_warmup_steps=args.get_warmup_steps(steps),
                             scheduler_specific_kwargs=args.lr_scheduler_kwargs)

    return HandStep(copy.deepcopy(trainer.model).cpu(), opt_cls, opt_kwargs, trainer.layout, args.max_grad_norm,
                    schedule)


def wrap_like(baseline: HandStep, ours: torch.nn.Module) -> None:
    """Wrap the baseline's model in DDP with the settings our wrapped model has (same process group)."""
    from torch.nn.parallel import DistributedDataParallel

    baseline.model = DistributedDataParallel(
        baseline.model, find_unused_parameters=ours.find_unused_parameters, bucket_cap_mb=ours.bucket_bytes_cap / 2**20,
        broadcast_buffers=ours.broadcast_buffers, static_graph=ours.static_graph,
        gradient_as_bucket_view=ours.gradient_as_bucket_view,
    )


def alternating_callback(trainer: Any, baselines: dict[str, HandStep], batches: list[dict],
                         times: dict[str, list[float]]) -> Any:
    """A TrainerCallback that times each of our steps and then runs each baseline's step on the batch that
    step trained on (the last in `batches`); with two baselines, which goes first alternates."""
    from transformers import TrainerCallback

    class _Alternate(TrainerCallback):
        mark = 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.mark = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times["ours"].append(time.perf_counter() - self.mark)
            if "hand_ddp" in baselines and len(times["ours"]) == 1:  # ours is wrapped by now; its settings are known
                wrap_like(baselines["hand_ddp"], trainer.model_wrapped)
            batch, names = batches.pop(), list(baselines)
            turn = len(times["ours"]) % len(names)
            for name in names[turn:] + names[:turn]:
                times[name].append(baselines[name](batch))
            self.mark = time.perf_counter()  # the next step of ours counts from here

    return _Alternate()


def one_round(trainer: Any, ddp_baseline: bool, steps: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Step seconds of ours and of each baseline, pair by pair, over one training run; and each step's loss
    and learning rate of ours and of the bare baseline: equal when both trained the same weights on the same
    batches with the same schedule."""
    names = ["hand", "hand_ddp"] if ddp_baseline else ["hand"]
    baselines = {name: hand_step_for(trainer, steps) for name in names}  # before train(): the same initial weights
    batches: list[dict] = []
    losses: list[float] = []
    lrs: list[float] = []
    training_step = trainer.training_step

    def recording_step(model: torch.nn.Module, inputs: dict, *args: Any, **kwargs: Any) -> torch.Tensor:
        batches.append(inputs)  # a reference; compute_loss copies the dict before it pops from it
        lrs.append(trainer._get_learning_rate())  # the rate this step's optimizer step uses
        loss = training_step(model, inputs, *args, **kwargs)
        losses.append(float(loss))  # no gradient accumulation: the step's loss as the Trainer saw it
        return loss

    trainer.training_step = recording_step
    times: dict[str, list[float]] = {"ours": [], **{name: [] for name in names}}
    trainer.add_callback(alternating_callback(trainer, baselines, batches, times))
    trainer.train()
    if not ddp_settings(trainer)["wrapped"]:  # the comparison must not silently drop DDP again
        raise SystemExit(f"our side ran without DDP: model_wrapped is {type(trainer.model_wrapped).__name__}")
    hand = baselines["hand"]
    return times, {"ours": losses, "baseline": [float(x) for x in hand.losses],
                   "lr_ours": lrs, "lr_baseline": hand.lrs}


def losses_agree(trace: dict[str, list[float]], rtol: float) -> dict[str, Any]:
    """Whether both sides had the same loss and learning rate at every step, and the largest relative gaps."""
    def gap(a: list[float], b: list[float]) -> float:
        if len(a) != len(b) or not a:
            return float("inf")
        return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b, strict=True))

    loss_gap, lr_gap = gap(trace["ours"], trace["baseline"]), gap(trace["lr_ours"], trace["lr_baseline"])
    return {"steps": len(trace["ours"]), "max_relative_loss_gap": loss_gap, "max_relative_lr_gap": lr_gap,
            "agree": loss_gap <= rtol and lr_gap <= rtol}


def pair_ratio(base: list[float], ours: list[float]) -> float:
    """Median over step pairs of baseline seconds / our seconds: each pair met the same machine load."""
    return round(statistics.median(b / o for b, o in zip(base, ours, strict=True)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="pairs per round left out (first steps pay warm-up)")
    parser.add_argument("--min_ratio", type=float, default=0.95, help="target: throughput ratio at least this")
    parser.add_argument("--loss_rtol", type=float, default=1e-4,
                        help="largest relative gap between the two sides' per-step losses and learning rates")
    parser.add_argument("--ddp_baseline", action="store_true",
                        help="also time the hand loop wrapped in DDP like ours: what DDP itself costs")
    ns = parser.parse_args()
    result_only_on_stdout()
    join_single_process_group()
    work, model_dir, codec_dir = make_checkpoint(ns)
    from trainer.commands.train import build

    pooled: dict[str, list[float]] = {}
    per_round, agreement = [], []
    for _ in range(ns.rounds):
        trainer, _, _ = build(config(ns, work, model_dir, codec_dir))
        times, trace = one_round(trainer, ns.ddp_baseline, ns.steps)
        agreement.append(losses_agree(trace, ns.loss_rtol))
        if not agreement[-1]["agree"]:  # different training: no time comparison means anything
            print_result({"benchmark": "trainer_overhead", "losses_agree": agreement[-1], "trace": trace})
            raise SystemExit(f"the two sides trained differently: {agreement[-1]}")
        warm = ns.warmup if len(times["ours"]) > ns.warmup + 2 else 0
        for name, values in times.items():
            pooled.setdefault(name, []).extend(values[warm:])
        per_round.append(pair_ratio(times["hand"][warm:], times["ours"][warm:]))
    ours, base = pooled["ours"], pooled["hand"]
    params = sum(p.numel() for p in trainer.model.parameters())
    result = {
        "benchmark": "trainer_overhead", "device": "cpu", "threads": torch.get_num_threads(),
        "model": {"hidden_size": ns.hidden_size, "layers": ns.num_layers, "codebooks": ns.num_codebooks,
                  "parameters": params},
        "batch_size": ns.batch_size, "steps": ns.steps, "rounds": ns.rounds, "pairs": len(ours),
        "ddp": ddp_settings(trainer),
        "ours_step_seconds": round(statistics.median(ours), 4),
        "baseline_step_seconds": round(statistics.median(base), 4),
        "throughput_ratio": pair_ratio(base, ours),
        "ratio_of_medians": round(statistics.median(base) / statistics.median(ours), 3),
        "per_round_ratio": per_round, "first_step_loss": {"ours": round(trace["ours"][0], 4),
                                                          "baseline": round(trace["baseline"][0], 4)},
        "losses_agree": {"rtol": ns.loss_rtol, "steps_per_round": [a["steps"] for a in agreement],
                         "max_relative_loss_gap": max(a["max_relative_loss_gap"] for a in agreement),
                         "max_relative_lr_gap": max(a["max_relative_lr_gap"] for a in agreement),
                         "loss_change_over_round": round(trace["baseline"][-1] / trace["baseline"][0] - 1, 6)},
        "target": {"min_throughput_ratio": ns.min_ratio, "met": pair_ratio(base, ours) >= ns.min_ratio},
    }
    if ns.ddp_baseline:
        result |= {"ddp_baseline_step_seconds": round(statistics.median(pooled["hand_ddp"]), 4),
                   "throughput_ratio_vs_ddp_baseline": pair_ratio(pooled["hand_ddp"], ours),
                   "ddp_baseline_vs_bare": pair_ratio(base, pooled["hand_ddp"])}
    print_result(result)
    if not result["target"]["met"]:
        raise SystemExit(f"target missed: throughput ratio {result['throughput_ratio']} under {ns.min_ratio}")


if __name__ == "__main__":
    main()
