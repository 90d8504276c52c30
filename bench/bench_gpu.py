"""Training throughput of the real Higgs Audio v2 3B configuration: tokens/s, audio-seconds/s, peak memory, MFU.

What is timed is our training step: `HiggsAudioTrainer.train()` with the arguments `build_training_args`
makes, our collator, dataset classes, loss (`compute_loss`), NaN guard, gradient clipping, AdamW and
scheduler, the model assembled by `assemble` (LoRA or freezing): everything `trainer.commands.train.build`
sets up, except that the model is built in memory from a config with random weights (no 12 GB save and load)
and the samples are synthetic: a typical sentence rendered with the checkpoint chat template (the tiny BPE
tokenizer of `trainer.model.tiny` stands in for Llama-3's, with the real vocabulary size kept in the model)
and random codes for a 10 s clip (250 frames at 25 frames/s, 8 codebooks, stream BOS/EOS and the delay
pattern), all of the same length, so batches carry no padding. Step seconds: median time between consecutive
step ends after the warm-up steps (CUDA synchronised at each step end). FLOPs per step: `FlopCounterMode` over
one forward+backward of `compute_loss` on one micro-batch (gradient checkpointing off, so recomputation is not
counted: model FLOPs), times the gradient accumulation steps; the analytic 6 * N_active * tokens (N_active:
the weights one token passes through: attention, one of the two FFNs, the audio head) is printed beside it (on
CPU the counter sees no FLOPs in SDPA's attention kernel, on CUDA it does). MFU = FLOPs per step / step
seconds / the chip's dense bf16 peak (989 TFLOP/s for an H100 or H200 SXM, or `--peak_tflops`);
`mfu_vs_measured_matmul` divides by the rate of one large bf16 matrix product instead.

Variants, one-at-a-time toggles against `baseline` (full fine-tuning, SDPA attention, transformers'
default optimizer adamw_torch_fused, no gradient checkpointing, no compilation, bf16 autocast on GPU),
run in this order in one process: lora (r=16 on q/k/v/o, bf16 base on GPU), weight_dtype (full
fine-tuning with the other weight dtype: bf16 weights and AdamW states, or fp32 masters), optimizer
(adamw_torch, the for-each kernel), gradient_checkpointing, eager and flash_attention_2 attention (the
latter only where flash_attn imports, else `unavailable`), compile_regions (torch.compile on each
layer's attention and two FFNs; the token routing between the FFNs stays eager) and torch_compile
(`TrainingArguments(torch_compile=True)`: the whole model, whose masked routing breaks the graph in
every layer). `ratios` compares each with the baseline of the same run (speedup > 1: faster). Each
variant is isolated: an out-of-memory, a compile failure or the end of `--budget_seconds` is recorded
as an error string and memory is freed before the next; variants the budget has no room for are
`skipped`. The JSON is rewritten to `--out` after every variant; progress goes to stderr.

    .venv/bin/python bench/bench_gpu.py --preset tiny   # CPU: about 10 s, the two compile variants add a minute
    bash bench/gpu_run.sh                               # the device call: --preset full, JSON in $OUT/gpu.json

Which GPU for which variant, at the full preset (5.4 B parameters: the 5.8 B of the release less the
text head, which these runs do not build; batch 8 of 324 tokens, 4 accumulation steps): an H200 (141 GB)
runs every variant with fp32 master weights, as our full fine-tuning trains (16 bytes per parameter for
weights, gradients and AdamW states, about 86 GB, plus about 10 GB of bf16 weight copies under autocast
and about 12 GB of activations). On an H100 (80 GB) that does not fit: `--weights auto` (the default)
then makes the baseline's weights bf16 (8 bytes per parameter, about 43 GB), and the `weight_dtype`
variant records the fp32 attempt running out of memory; or keep fp32 masters at reduced depth with
`--num_layers 14` (the JSON's `scaled_down_from_real` says so). bench/gpu_run.sh is the device call.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, StepClock

FRAME_RATE = 25.0  # audio frames per second of the Higgs Audio v2 tokenizer
CODES = 1024  # codes per codebook; stream BOS 1024 and EOS 1025 follow (codebook_size 1026)
WORDS_PER_SECOND = 2.5  # read speech, about 150 words a minute
PASSAGE_TEXT = (
    "It was the night before my birthday and the whole house smelled of oranges and fresh bread while "
    "my brother practised the same three songs on the piano over and over again until our neighbour "
    "knocked on the wall and asked him kindly to play something else for a change before the morning came "
    "and the guests arrived with their presents and their stories from the long journey across the hills"
)
PASSAGE = PASSAGE_TEXT.split()
# Dense bf16 tensor-core peak in TFLOPS (no sparsity), by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200", 989.0), ("H100", 989.0), ("H800", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0),
)
PRESETS: dict[str, dict[str, Any]] = {
    # The real Higgs Audio v2 3B configuration (transformers' HiggsAudioV2Config defaults, codebook_size 1026).
    "full": {"hidden_size": 3072, "num_layers": 28, "num_heads": 24, "num_kv_heads": 8, "intermediate_size": 8192,
             "vocab_size": 128256, "batch_size": 8, "grad_accum": 4, "seconds": 10.0, "steps": 5,
             "warmup_steps": 2},
    # Seconds on a CPU: the same structure (8 codebooks of 1026, delay pattern, dual FFN) at toy width.
    "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128,
             "vocab_size": None, "batch_size": 2, "grad_accum": 1, "seconds": 2.0, "steps": 3, "warmup_steps": 1},
}
REAL = PRESETS["full"]
ORDER = ("baseline", "lora", "weight_dtype", "optimizer", "gradient_checkpointing", "eager", "flash_attention_2",
         "compile_regions", "torch_compile")


@dataclasses.dataclass(frozen=True)
class Spec:
    """One training set-up; the variants differ from the baseline in one field."""

    lora: bool = False
    weights: str = "fp32"  # full fine-tuning weight dtype (fp32 masters under bf16 autocast, or bf16)
    attn: str = "sdpa"
    optim: str = "adamw_torch_fused"
    gradient_checkpointing: bool = False
    torch_compile: bool = False  # TrainingArguments(torch_compile=True): the whole model
    compile_regions: bool = False  # torch.compile on each layer's attention and FFNs only (no data-dependent ops)


def log(msg: str) -> None:
    print(f"[bench_gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`--option NAME=VALUE` pairs -> option values, parsed as the trainer's CLI parses them."""
    from trainer.config.values import SPECS, parse_value

    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip().lstrip("-").lower()
        if not sep or name not in SPECS:
            raise SystemExit(f"--option {pair!r}: expected NAME=VALUE with NAME one of the trainer's options")
        values[name] = parse_value(SPECS[name], raw, f"--option {name}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=tuple(PRESETS), default=None, help="full on CUDA, tiny otherwise")
    for name, kind in (("hidden_size", int), ("num_layers", int), ("num_heads", int), ("num_kv_heads", int),
                       ("intermediate_size", int), ("batch_size", int), ("grad_accum", int),
                       ("seconds", float), ("steps", int), ("warmup_steps", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="overrides the preset")
    p.add_argument("--ref_seconds", type=float, default=0.0,
                   help="add a reference clip of this length (context, not a target) before the target")
    p.add_argument("--variants", default=",".join(ORDER),
                   help=f"comma-separated, from {', '.join(ORDER)}; baseline always runs (ratios need it)")
    p.add_argument("--weights", choices=("auto", "fp32", "bf16"), default="auto",
                   help="baseline full fine-tuning weights; auto: fp32 masters if 16 bytes/parameter fit in 80%% "
                        "of the GPU, else bf16 (CPU: fp32)")
    p.add_argument("--lora_rank", type=int, default=16)
    p.add_argument("--peak_tflops", type=float, default=None, help="dense bf16 peak of the chip (default: by name)")
    p.add_argument("--budget_seconds", type=float, default=None,
                   help="skip variants that would not finish within this many seconds of the start")
    p.add_argument("--out", default=None, help="also write the JSON here (rewritten after every variant)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a trainer option (as in `train --help`, without the dashes) for every variant; repeatable")
    p.add_argument("--profile_steps", type=int, default=0,
                   help="after the measured steps, profile this many more (torch.profiler) and add a summary "
                        "(bench/profile_summary.py) to each variant; 0: no profile")
    ns = p.parse_args(argv)
    ns.options = parse_options(ns.option)
    import torch

    ns.cuda = torch.cuda.is_available()
    preset = ns.preset or ("full" if ns.cuda else "tiny")
    ns.preset = preset
    explicit = {k for k in PRESETS[preset] if getattr(ns, k, None) is not None}
    for key, value in PRESETS[preset].items():
        if getattr(ns, key, None) is None:
            setattr(ns, key, value)
    if "hidden_size" in explicit:  # keep the real shape ratios at another width
        head_dim = 128 if ns.hidden_size >= 512 else 16
        if "num_heads" not in explicit:
            ns.num_heads = max(1, ns.hidden_size // head_dim)
        if "num_kv_heads" not in explicit:
            ns.num_kv_heads = ns.num_heads // 3 if ns.num_heads % 3 == 0 else max(1, ns.num_heads // 2)
        if "intermediate_size" not in explicit:
            ns.intermediate_size = ns.hidden_size * 8 // 3
    if ns.warmup_steps < 1 or ns.steps < 1:
        p.error("--steps and --warmup_steps must be at least 1 (the first step includes one-off set-up)")
    wanted = [v.strip() for v in ns.variants.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in ORDER]
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {', '.join(ORDER)}")
    ns.variant_list = [v for v in ORDER if v == "baseline" or v in wanted]
    return ns


# ---- model and data ---------------------------------------------------------------------------------
def model_config(ns: argparse.Namespace, tokenizer: Any) -> Any:
    """HiggsAudioV2Config of the preset, special ids taken from the stand-in tokenizer."""
    from transformers import HiggsAudioV2Config

    from trainer.model.tiny import AUDIO_BOS_TOKEN, AUDIO_DELAY_TOKEN, AUDIO_TOKEN, BOS, EOS

    ids = tokenizer.convert_tokens_to_ids
    return HiggsAudioV2Config(
        vocab_size=ns.vocab_size or len(tokenizer), hidden_size=ns.hidden_size, intermediate_size=ns.intermediate_size,
        num_hidden_layers=ns.num_layers, num_attention_heads=ns.num_heads, num_key_value_heads=ns.num_kv_heads,
        head_dim=ns.hidden_size // ns.num_heads, max_position_embeddings=max(2048, 4 * sequence_guess(ns)),
        num_codebooks=8, codebook_size=CODES + 2, audio_stream_bos_id=CODES, audio_stream_eos_id=CODES + 1,
        audio_token_id=ids(AUDIO_TOKEN), audio_bos_token_id=ids(AUDIO_BOS_TOKEN),
        audio_delay_token_id=ids(AUDIO_DELAY_TOKEN), pad_token_id=ids(EOS), bos_token_id=ids(BOS),
        eos_token_id=ids("<|eot_id|>"),
    )


def sequence_guess(ns: argparse.Namespace) -> int:
    return int((ns.seconds + ns.ref_seconds) * (FRAME_RATE + 5)) + 200


def words(seconds: float, offset: int = 0) -> str:
    n = max(1, round(seconds * WORDS_PER_SECOND))
    return " ".join(PASSAGE[(offset + i) % len(PASSAGE)] for i in range(n)).capitalize() + "."


def make_samples(ns: argparse.Namespace, tokenizer: Any, layout: Any, count: int) -> list[Any]:
    """`count` conversations of the same shape: [system, (user ref text, assistant ref audio,) user text,
    assistant target audio], with random codes."""
    import numpy as np

    from trainer.encode.collator import EncodedSample, text_targets_after, tokenize_conversation

    def text(t: str) -> list[dict]:
        return [{"type": "text", "text": t}]

    audio = [{"type": "audio", "path": "clip.wav"}]
    messages = [{"role": "system", "content": text("Generate audio following instruction.")}]
    frames = [round(ns.seconds * FRAME_RATE)]
    targets = [True]
    if ns.ref_seconds > 0:
        messages += [{"role": "user", "content": text(words(ns.ref_seconds, 7))},
                     {"role": "assistant", "content": audio}]
        frames.insert(0, round(ns.ref_seconds * FRAME_RATE))
        targets.insert(0, False)
    messages += [{"role": "user", "content": text(words(ns.seconds))}, {"role": "assistant", "content": audio}]
    ids = tokenize_conversation(tokenizer, messages, layout)
    placeholders = [i for i, t in enumerate(ids) if t == layout.audio_token_id]
    rng = np.random.default_rng(0)
    return [
        EncodedSample(
            id=f"s{i}", source="synthetic", input_ids=ids,
            codes=[rng.integers(0, CODES, (layout.num_codebooks, f)) for f in frames], is_target=targets,
            text_target_positions=text_targets_after(ids, [p for p, t in zip(placeholders, targets, strict=True) if t],
                                                     layout.eot_id),
        )
        for i in range(count)
    ]


def active_parameters(cfg: Any) -> int:
    """Weights one token multiplies with: q/k/v/o, one of the two FFNs (text or audio), the audio head."""
    h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    head_dim = cfg.head_dim
    attn = h * head_dim * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
    return layers * (attn + 3 * h * i) + h * cfg.num_codebooks * cfg.codebook_size


def total_parameters(cfg: Any) -> int:
    """Every weight: text and audio embeddings, the active ones, the second FFN and the norms of each layer."""
    h = cfg.hidden_size
    embeddings = (cfg.vocab_size + cfg.num_codebooks * cfg.codebook_size) * h
    return embeddings + active_parameters(cfg) + cfg.num_hidden_layers * (3 * h * cfg.intermediate_size + 4 * h) + h


def peak_tflops(ns: argparse.Namespace, device_name: str) -> tuple[float | None, str]:
    if ns.peak_tflops:
        return ns.peak_tflops, "--peak_tflops"
    if not ns.cuda:
        return None, "cpu: no peak, MFU not reported"
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name:
            return value, f"table entry {key!r} (dense bf16)"
    return None, f"unknown device {device_name!r}: pass --peak_tflops for MFU"


def matmul_tflops() -> float:
    """The chip's bf16 rate on one large matrix product (8192^3, random data): a measured ceiling."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    rate = 2 * 8192**3 * 10 / (time.perf_counter() - start) / 1e12
    del a, b
    torch.cuda.empty_cache()
    return round(rate, 1)


# ---- one variant ------------------------------------------------------------------------------------
class BudgetExceeded(BaseException):
    """The time budget ran out inside a variant (a BaseException, so no `except Exception` on the way swallows it)."""


@contextlib.contextmanager
def alarm(seconds: float | None):
    if seconds is None:
        yield
        return

    def _fire(signum, frame):
        raise BudgetExceeded(f"time budget reached after {seconds:.0f} s in this variant")

    previous = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def train_config(ns: argparse.Namespace, spec: Spec, out: Path) -> Any:
    from trainer.config.values import build_config

    return build_config({
        "model_path": "(in memory)", "audio_tokenizer_path": "(not used)", "train_data_file": "(synthetic)",
        "output_dir": str(out), "use_lora": spec.lora, "lora_rank": ns.lora_rank,
        "attn_implementation": spec.attn,
        "gradient_checkpointing": spec.gradient_checkpointing, "disable_eval": True,
        "max_steps": ns.warmup_steps + ns.steps + ns.profile_steps, "per_device_train_batch_size": ns.batch_size,
        "gradient_accumulation_steps": ns.grad_accum, "warmup_steps": 0, "save_steps": 10**9,
        "logging_steps": 10**9, "dataloader_num_workers": 0, "resume": "never", "log_level": "warning",
        "save_on_signal": False, **ns.options,
    })


def count_flops(trainer: Any, model: Any, batch: dict[str, Any]) -> tuple[int, str]:
    """FLOPs of one forward+backward of `compute_loss` on `batch`, and how they were counted.

    torch's counter cannot read the shapes of SDPA with grouped-query attention (the real config has 24 query
    and 8 key/value heads: "sdpa_flop_count: query/key/value shapes are incompatible"); then the micro-batch
    is counted once more with eager attention, the same arithmetic in plain matrix products.
    """
    from torch.utils.flop_counter import FlopCounterMode

    def once() -> int:
        with FlopCounterMode(display=False) as counter:
            with trainer.accelerator.autocast():
                loss = trainer.compute_loss(model, batch)
            loss.backward()
        model.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    try:
        return once(), "as trained"
    except AssertionError as err:
        if "sdpa_flop_count" not in str(err):
            raise
    model.zero_grad(set_to_none=True)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    attn = base.config._attn_implementation
    base.set_attn_implementation("eager")
    try:
        return once(), "with eager attention (the counter cannot read SDPA's grouped-query shapes)"
    finally:
        base.set_attn_implementation(attn)


def measure(ns: argparse.Namespace, spec: Spec, ctx: dict[str, Any]) -> dict[str, Any]:
    """Build the trainer for `spec`, count one micro-batch's FLOPs, train warm-up + measured steps."""
    import torch
    from transformers import HiggsAudioV2ForConditionalGeneration

    from trainer.encode.collator import Collator, SampleDataset
    from trainer.model.assemble import assemble, count_parameters
    from trainer.train.args import build_training_args
    from trainer.train.trainer import HiggsAudioTrainer

    started = time.perf_counter()
    cuda = ns.cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    bf16 = cuda
    cfg = train_config(ns, spec, Path(ctx["workdir"]) / "out")
    args = build_training_args(cfg, use_cpu=not cuda, bf16=bf16)
    # The variant's optimizer and compile switch; no checkpoint saves (the Trainer would save at the last step).
    args = dataclasses.replace(args, optim=spec.optim, torch_compile=spec.torch_compile, save_strategy="no")
    # As trainer.commands.train.build: LoRA keeps a bf16 base on GPU; full fine-tuning fp32 masters (or bf16 if asked).
    half = (spec.lora and bf16) or (not spec.lora and spec.weights == "bf16")
    dtype = torch.bfloat16 if half else torch.float32
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = HiggsAudioV2ForConditionalGeneration._from_config(
            model_config(ns, ctx["tokenizer"]), dtype=dtype, attn_implementation=spec.attn)
    model.config.use_cache = False
    model = assemble(model, cfg.model, cfg.lora)  # what training applies: LoRA, or the freezing options
    trainable, total = count_parameters(model)
    layout = ctx["layout"]
    trainer = HiggsAudioTrainer(
        model=model, args=args, train_dataset=SampleDataset(ctx["samples"], layout, False),
        data_collator=Collator(layout, False), layout=layout, frame_rate=FRAME_RATE, evaluate=False,
        group_by_length=True,
    )
    clock = StepClock(sync=torch.cuda.synchronize if cuda else None)

    try:
        # Model FLOPs of one micro-batch through our compute_loss, forward and backward, before training
        # (so no checkpointing recompute and no compiled graph hides the operators from the counter).
        model.train()
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        micro_flops, flops_counted = count_flops(trainer, model, batch)
        del batch
        build_seconds = time.perf_counter() - started
        log(f"  built in {build_seconds:.1f} s; {total / 1e9:.3f} B parameters, {trainable / 1e9:.3f} B trainable; "
            f"{micro_flops / 1e12:.2f} TFLOP per micro-batch")
        if spec.compile_regions:  # after the count: in place, so the trainer trains the compiled modules
            for layer in model.model.layers:
                for module in (layer.self_attn, layer.mlp, layer.audio_mlp):
                    module.compile()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        trainer.add_callback(clock.callback)
        profiler = None
        if ns.profile_steps:  # after the measured steps, so the profiler's cost stays out of their times
            from profile_summary import ProfileSteps

            profiler = ProfileSteps(ns.warmup_steps + ns.steps, ns.profile_steps, cuda)
            trainer.add_callback(profiler)
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer's log lines stay off the JSON on stdout
            trainer.train()
        peak = torch.cuda.max_memory_allocated() if cuda else None
        reserved = torch.cuda.max_memory_reserved() if cuda else None
        optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
        unwrapped = trainer.model.get_base_model() if spec.lora else trainer.model
        applied = {  # what the trainer really ran with, read back from it
            "optimizer": type(optimizer).__name__,
            "fused": bool(optimizer.defaults.get("fused")),
            "attn_implementation": trainer.model.config._attn_implementation,
            "gradient_checkpointing": bool(unwrapped.is_activation_checkpointing
                                           if hasattr(type(unwrapped), "is_activation_checkpointing")
                                           else getattr(unwrapped, "is_gradient_checkpointing", False)),
            "compiled": type(trainer.model_wrapped).__name__ == "OptimizedModule",
            "compiled_regions": spec.compile_regions,
        }
    finally:
        trainer.accelerator.free_memory()
        del trainer, model
    times = clock.times_from_begin()
    measured = times[ns.warmup_steps:ns.warmup_steps + ns.steps]
    step = statistics.median(measured)
    per_step = ctx["per_step"]
    flops = micro_flops * ns.grad_accum
    peak_flops = ctx["peak_tflops"] * 1e12 if ctx["peak_tflops"] else None
    return {
        "status": "ok",
        "parameters": total,
        "trainable_parameters": trainable,
        "weight_dtype": str(dtype).removeprefix("torch."),
        "applied": applied,
        "options": {k: str(v) for k, v in ns.options.items()},
        "profile": profiler.summary if profiler is not None else None,
        "step_seconds": round(step, 4),
        "step_seconds_mean": round(statistics.fmean(measured), 4),
        "step_seconds_all": [round(t, 4) for t in times],
        "first_step_seconds": round(times[0], 3),
        "build_seconds": round(build_seconds, 2),
        "tokens_per_second": round(per_step["tokens"] / step, 1),
        "audio_seconds_per_second": round(per_step["target_frames"] / FRAME_RATE / step, 2),
        "samples_per_second": round(per_step["samples"] / step, 3),
        "peak_memory_bytes": peak,
        "peak_memory_gib": round(peak / 2**30, 2) if peak is not None else None,
        "peak_reserved_gib": round(reserved / 2**30, 2) if reserved is not None else None,
        "flops_per_step": flops,
        "flops_counted": flops_counted,
        "analytic_6nt_flops_per_step": ctx["analytic"],
        "counted_vs_analytic": round(flops / ctx["analytic"], 3),
        "achieved_tflops": round(flops / step / 1e12, 3),
        "mfu": round(flops / step / peak_flops, 4) if peak_flops else None,
        "mfu_vs_measured_matmul": round(flops / step / ctx["matmul"] / 1e12, 4) if ctx["matmul"] else None,
    }


def free_memory(spec: Spec, tf32: tuple[bool, bool, str]) -> None:
    import torch

    gc.collect()
    if spec.torch_compile or spec.compile_regions:
        torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32[0], tf32[1]
    torch.set_float32_matmul_precision(tf32[2])  # a compile run's TrainingArguments switch TF32 on


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:400] if text else ''}"


# ---- the sweep --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    ns = parse_args(argv)
    import peft
    import torch
    import transformers
    from transformers import TrainingArguments
    from transformers.utils import is_flash_attn_2_available

    from trainer.encode.collator import Layout
    from trainer.model.tiny import build_text_tokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device_name = torch.cuda.get_device_name() if ns.cuda else "cpu"
    total_mem = torch.cuda.get_device_properties(0).total_memory if ns.cuda else None
    # Trained on the passage too, so that its words are whole tokens, as most English words are in Llama-3's vocabulary.
    tokenizer = build_text_tokenizer(vocab_size=2048, extra_text=f"{PASSAGE_TEXT}. {PASSAGE_TEXT.lower()}.")
    cfg = model_config(ns, tokenizer)
    layout = Layout.from_model(cfg, tokenizer)
    per_step_samples = ns.batch_size * ns.grad_accum
    samples = make_samples(ns, tokenizer, layout,
                           per_step_samples * (ns.warmup_steps + ns.steps + ns.profile_steps + 1))
    seq = samples[0].num_tokens(layout.num_codebooks)
    target_frames = samples[0].target_frames()
    text_tokens = len(samples[0].input_ids) - len(samples[0].codes)
    parameters = active_parameters(cfg)
    all_params = total_parameters(cfg)
    weights = ns.weights
    weights_note = f"--weights {weights}"
    if weights == "auto":
        weights = "fp32"
        if ns.cuda and 16 * all_params > 0.8 * total_mem:
            weights = "bf16"
        weights_note = (f"auto: fp32 masters need ~{16 * all_params / 2**30:.0f} GiB before activations; the device "
                        f"has {total_mem / 2**30:.0f} GiB" if ns.cuda else "auto: fp32 on CPU")
    default_optim = str(TrainingArguments.__dataclass_fields__["optim"].default)
    other_optim = "adamw_torch" if default_optim == "adamw_torch_fused" else "adamw_torch_fused"
    base = Spec(weights=weights, optim=default_optim)
    specs = {
        "baseline": base,
        "lora": dataclasses.replace(base, lora=True),
        "weight_dtype": dataclasses.replace(base, weights="bf16" if weights == "fp32" else "fp32"),
        "optimizer": dataclasses.replace(base, optim=other_optim),
        "gradient_checkpointing": dataclasses.replace(base, gradient_checkpointing=True),
        "eager": dataclasses.replace(base, attn="eager"),
        "flash_attention_2": dataclasses.replace(base, attn="flash_attention_2"),
        "compile_regions": dataclasses.replace(base, compile_regions=True),
        "torch_compile": dataclasses.replace(base, torch_compile=True),
    }
    peak, peak_source = peak_tflops(ns, device_name)
    matmul = matmul_tflops() if ns.cuda else None
    per_step = {"samples": per_step_samples, "tokens": seq * per_step_samples,
                "target_frames": target_frames * per_step_samples}
    scaled = {k: getattr(ns, k) for k in ("hidden_size", "num_layers", "num_heads", "num_kv_heads",
                                          "intermediate_size") if getattr(ns, k) != REAL[k]}
    result: dict[str, Any] = {
        "benchmark": "gpu_training",
        "device": device_name,
        "device_memory_gib": round(total_mem / 2**30, 1) if total_mem else None,
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "python": sys.version.split()[0]},
        "preset": ns.preset,
        "model": {
            "hidden_size": ns.hidden_size, "layers": ns.num_layers, "heads": ns.num_heads,
            "kv_heads": ns.num_kv_heads, "intermediate_size": ns.intermediate_size, "vocab_size": cfg.vocab_size,
            "codebooks": cfg.num_codebooks, "codebook_size": cfg.codebook_size, "parameters": all_params,
            "active_parameters": parameters,
            "real_3b_config": not scaled and cfg.vocab_size == REAL["vocab_size"],
            "scaled_down_from_real": scaled,
        },
        "batch": {
            "batch_size": ns.batch_size, "gradient_accumulation_steps": ns.grad_accum,
            "samples_per_step": per_step_samples, "clip_seconds": ns.seconds, "reference_seconds": ns.ref_seconds,
            "sequence_length": seq, "text_tokens": text_tokens, "target_frames": target_frames,
            "tokens_per_step": per_step["tokens"], "padding": "none (all samples the same length)",
        },
        "precision": "bf16 autocast (LoRA: bf16 base)" if ns.cuda else "fp32 (CPU)",
        "baseline_spec": dataclasses.asdict(base),
        "weights_choice": weights_note,
        "steps": {"warmup": ns.warmup_steps, "measured": ns.steps},
        "peak_tflops": peak,
        "peak_tflops_source": peak_source,
        "matmul_tflops_measured": matmul,
        "budget_seconds": ns.budget_seconds,
        "memory_note": "peak_memory_bytes: torch.cuda.max_memory_allocated during training" if ns.cuda
        else "CPU: peak_memory_bytes is null; process_max_rss_bytes is the whole process's high-water mark",
        "variants": {},
        "ratios": {},
        "complete": False,
    }
    ctx = {"tokenizer": tokenizer, "layout": layout, "samples": samples, "per_step": per_step, "peak_tflops": peak,
           "matmul": matmul,
           "analytic": 6 * parameters * per_step["tokens"], "workdir": tempfile.mkdtemp(prefix="bench-gpu-")}
    log(f"{device_name}: preset {ns.preset}, sequence {seq} tokens, {per_step_samples} samples/step, "
        f"variants {','.join(ns.variant_list)}, baseline {dataclasses.asdict(base)}")
    write(ns, result)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())
    durations: list[float] = []
    for name in ns.variant_list:
        spec = specs[name]
        entry: dict[str, Any] = {"spec": {k: v for k, v in dataclasses.asdict(spec).items()
                                          if v != getattr(base, k)} or "baseline"}
        elapsed = time.perf_counter() - t0
        remaining = None if ns.budget_seconds is None else ns.budget_seconds - elapsed
        estimate = max(durations, default=0.0) * (3 if spec.torch_compile or spec.compile_regions else 1)
        if spec.attn == "flash_attention_2" and not (ns.cuda and is_flash_attn_2_available()):
            entry |= {"status": "unavailable", "error": "flash_attention_2 needs CUDA and the flash_attn package"
                      if not ns.cuda else "flash_attn is not installed"}
        elif remaining is not None and name != "baseline" and estimate > remaining:
            entry |= {"status": "skipped", "error": f"budget: {remaining:.0f} s left, estimated {estimate:.0f} s"}
        else:
            log(f"variant {name}: {entry['spec']}")
            started = time.perf_counter()
            try:
                with alarm(remaining):
                    entry |= measure(ns, spec, ctx)
            except (Exception, BudgetExceeded) as err:  # OOM, compile failure, budget: recorded, the sweep goes on
                entry |= {"status": "error", "error": first_line(err)}
                if ns.cuda:
                    entry["peak_memory_gib_before_error"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            finally:
                free_memory(spec, tf32)
            entry["variant_seconds"] = round(time.perf_counter() - started, 1)
            durations.append(entry["variant_seconds"])
            if not ns.cuda:
                entry["process_max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        log(f"  {name}: {summary(entry)}")
        result["variants"][name] = entry
        result["ratios"] = ratios(result["variants"])
        result["elapsed_seconds"] = round(time.perf_counter() - t0, 1)
        write(ns, result)
    result["complete"] = True
    write(ns, result)
    return result


def summary(entry: dict[str, Any]) -> str:
    if entry.get("status") != "ok":
        return f"{entry.get('status')}: {entry.get('error')}"
    mfu = f", MFU {entry['mfu']:.1%}" if entry.get("mfu") is not None else ""
    mem = f", peak {entry['peak_memory_gib']} GiB" if entry.get("peak_memory_gib") is not None else ""
    return (f"{entry['step_seconds']} s/step, {entry['tokens_per_second']} tokens/s, "
            f"{entry['audio_seconds_per_second']} audio-s/s{mem}{mfu}")


def ratios(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per variant against the baseline of the same run: speedup (>1 is faster), memory and MFU ratios."""
    base = variants.get("baseline", {})
    out: dict[str, Any] = {}
    for name, v in variants.items():
        if name == "baseline":
            continue
        if base.get("status") != "ok" or v.get("status") != "ok":
            out[name] = None
            continue
        mem = (round(v["peak_memory_bytes"] / base["peak_memory_bytes"], 3)
               if v.get("peak_memory_bytes") and base.get("peak_memory_bytes") else None)
        out[name] = {
            "speedup": round(base["step_seconds"] / v["step_seconds"], 3),
            "tokens_per_second": round(v["tokens_per_second"] / base["tokens_per_second"], 3),
            "peak_memory": mem,
            "mfu": round(v["mfu"] / base["mfu"], 3) if v.get("mfu") and base.get("mfu") else None,
        }
    return out


def write(ns: argparse.Namespace, result: dict[str, Any]) -> None:
    if ns.out:
        path = Path(ns.out)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(json.dumps(main(), indent=2))
