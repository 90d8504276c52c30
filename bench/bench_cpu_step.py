"""Where the CPU training step goes, and how far it is from the machine's matmul rate.

The hand-written loop of `bench_trainer_overhead.py` (the same model, batches, optimizer, loss and clipping as
our Trainer) is profiled with `torch.profiler` (self CPU time per operator, top `--top`), and its model FLOPs
per step (`FlopCounterMode`, forward and backward) over its median step time are set against a plain fp32
matmul measured in the same run (`--matmul_size` square, the same threads, a 0.5 s burst after each round of
steps, median: the load of a shared machine changes over minutes): `fraction_of_matmul_rate`.

Variants are timed against the plain step (the Trainer's own optimizer: transformers' default, the fused
AdamW) on copies of the same weights, step by step in turn on the same batches (medians of plain / variant
over the steps after `--warmup`): `adamw_foreach` (the multi-tensor AdamW kernels instead of the fused one),
`adamw_for_loop` (one parameter at a time) and
`clip_foreach` (multi-tensor norm for the clipping); the attention: `attention_eager` (the model's own
attention instead of SDPA); with `--compile`, `compile_layers` (`torch.compile` of each decoder layer; its
first steps compile, so only the steps after `--warmup` count). A variant's losses must stay those of the
plain step (`variants_max_relative_loss_gap`). The plain step routes audio and text tokens as training does
(`--precomputed_routing`, on by default).

`routing` compares, on the tiny model (`make-tiny-model`'s sizes) and on the benchmark's model (`mid`), the step
with transformers' per-layer boolean-mask routing against ours and against running both FFNs on every token
(`routing_compare.py`): step times and their ratios, losses, synchronisations per step and `torch.compile`
graph breaks per decoder layer. Ours must train like transformers' (relative loss gap at most 1e-5), and sync
and break less, or the run exits 1. `--routing_only` measures this section alone.

    .venv/bin/python bench/bench_cpu_step.py [--steps 12] [--top 12]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from typing import Any

import torch
from bench_trainer_overhead import HandStep, hand_step_for
from common import add_model_args, config, make_checkpoint, print_result, result_only_on_stdout
from routing_compare import compare


def matmul_gflops(size: int, seconds: float = 0.5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def step_flops(hand: HandStep, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one forward and backward on a throwaway copy (the optimizer's few FLOPs are left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.train.losses import audio_codebook_losses

    model = copy.deepcopy(hand.model)
    with FlopCounterMode(display=False) as counter:
        out = model(**{k: v for k, v in batch.items() if k != "audio_labels"})
        sums, counts = audio_codebook_losses(out.logits, batch["input_ids"], batch["audio_input_ids_mask"],
                                             batch["audio_labels"], hand.layout)
        (sums / counts.clamp(min=1)).sum().backward()
    return counter.get_total_flops()


class ClipForeach(HandStep):
    def __call__(self, batch: dict[str, torch.Tensor]) -> float:
        original = torch.nn.utils.clip_grad_norm_
        torch.nn.utils.clip_grad_norm_ = lambda params, clip: original(params, clip, foreach=True)
        try:
            return super().__call__(batch)
        finally:
            torch.nn.utils.clip_grad_norm_ = original


def variants(trainer: Any, steps: int, compile_layers: bool) -> dict[str, HandStep]:
    """The plain hand step and each variant, on copies of the same initial weights."""
    out = {"plain": hand_step_for(trainer, steps)}
    for name, foreach in (("adamw_foreach", True), ("adamw_for_loop", False)):
        step = hand_step_for(trainer, steps)
        for settings in (*step.optimizer.param_groups, step.optimizer.defaults):
            settings.update(fused=False, foreach=foreach)
        out[name] = step
    clip = hand_step_for(trainer, steps)
    clip.__class__ = ClipForeach
    out["clip_foreach"] = clip
    eager = hand_step_for(trainer, steps)
    eager.model.set_attn_implementation("eager")
    out["attention_eager"] = eager
    if compile_layers:
        compiled = hand_step_for(trainer, steps)
        for layer in compiled.model.model.layers:
            layer.compile()
        out["compile_layers"] = compiled
    return out


def loader_batches(trainer: Any, steps: int) -> list[dict[str, torch.Tensor]]:
    """`steps` batches from the trainer's own loader, repeated from the start when it runs out."""
    batches = [b for _, b in zip(range(steps), trainer.get_train_dataloader(), strict=False)]
    while len(batches) < steps:
        batches += batches[:steps - len(batches)]
    return batches


def routing_figures(ns: argparse.Namespace, trainer: Any, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """`routing_compare.compare` on the tiny model and on the benchmark's own model (`mid`)."""
    from trainer.commands.train import build

    tiny_ns = argparse.Namespace(**{**vars(ns), "hidden_size": 32, "num_layers": 2, "num_codebooks": 2})
    work, model_dir, codec_dir = make_checkpoint(tiny_ns)
    tiny, _, _ = build(config(tiny_ns, work, model_dir, codec_dir, output_dir=str(work / "out-tiny")))
    out = {}
    for name, t, b in (("tiny", tiny, loader_batches(tiny, ns.steps)), ("mid", trainer, batches)):
        model = t.model.config
        out[name] = {"hidden_size": model.hidden_size, "codebooks": model.num_codebooks,
                     **compare(lambda t=t: hand_step_for(t, ns.steps), b, ns.warmup)}
    return out


def routing_faults(routing: dict[str, Any]) -> list[str]:
    """What makes the run fail: our routing trains differently, or syncs or breaks graphs as much as before."""
    faults = []
    for name, r in routing.items():
        ours, theirs = r["routed"], r["transformers"]
        if ours["max_relative_loss_gap"] > 1e-5:
            faults.append(f"{name}: routed losses differ from transformers' by {ours['max_relative_loss_gap']}")
        if ours["syncs_per_step"] >= theirs["syncs_per_step"] or ours["graph_breaks_per_layer"] > 0:
            faults.append(f"{name}: routed step syncs {ours['syncs_per_step']} times "
                          f"and breaks {ours['graph_breaks_per_layer']} graphs per layer")
    return faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--profile_steps", type=int, default=4)
    parser.add_argument("--matmul_size", type=int, default=1024)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of each decoder layer")
    parser.add_argument("--routing_only", action="store_true", help="measure the routing section alone")
    ns = parser.parse_args()
    ns.steps = max(ns.steps, ns.warmup + 3)
    result_only_on_stdout()
    work, model_dir, codec_dir = make_checkpoint(ns)
    from trainer.commands.train import build

    trainer, _, _ = build(config(ns, work, model_dir, codec_dir))
    batches = loader_batches(trainer, ns.steps)
    if ns.routing_only:
        report_routing(ns, routing_figures(ns, trainer, batches))
        return
    steps = variants(trainer, ns.steps, ns.compile)
    times: dict[str, list[float]] = {name: [] for name in steps}
    matmul_rates = []
    for i, batch in enumerate(batches):  # in turn, a different one first each step
        names = list(steps)
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(steps[name](batch))
        matmul_rates.append(matmul_gflops(ns.matmul_size))
    plain = steps["plain"]
    losses = [float(x) for x in plain.losses]
    agree = {name: max(abs(float(a) - b) / abs(b) for a, b in zip(s.losses, losses, strict=True))
             for name, s in steps.items()}

    profiled = hand_step_for(trainer, ns.steps)
    from torch.profiler import ProfilerActivity, profile

    profiled(batches[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches[:ns.profile_steps]:
            profiled(batch)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    flops = step_flops(plain, batches[0])
    matmul = statistics.median(matmul_rates[ns.warmup:])
    step_s = statistics.median(times["plain"][ns.warmup:])
    rate = flops / step_s / 1e9
    report_routing(ns, routing_figures(ns, trainer, batches), {
        "benchmark": "cpu_step", "threads": torch.get_num_threads(), "batch_size": ns.batch_size,
        "model": {"hidden_size": ns.hidden_size, "layers": ns.num_layers, "codebooks": ns.num_codebooks},
        "step_seconds": round(step_s, 4), "flops_per_step": flops, "step_gflops": round(rate, 1),
        "matmul_gflops": round(matmul, 1), "fraction_of_matmul_rate": round(rate / matmul, 3),
        "optimizer": {k: plain.optimizer.defaults.get(k) for k in ("fused", "foreach")},
        "profile_self_cpu_share": {e.key: round(e.self_cpu_time_total / total, 3) for e in events[:ns.top]},
        "variants_speedup": {name: round(statistics.median(
            p / v for p, v in zip(times["plain"][ns.warmup:], t[ns.warmup:], strict=True)), 3)
            for name, t in times.items() if name != "plain"},
        "variants_max_relative_loss_gap": {k: float(f"{v:.2e}") for k, v in agree.items() if k != "plain"},
    })


def report_routing(ns: argparse.Namespace, routing: dict[str, Any], result: dict[str, Any] | None = None) -> None:
    """Print the result with its routing section; exit 1 on a routing fault (`routing_faults`)."""
    print_result((result or {"benchmark": "cpu_step", "threads": torch.get_num_threads(),
                              "batch_size": ns.batch_size}) | {"routing": routing})
    faults = routing_faults(routing)
    if faults:
        print("; ".join(faults), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
