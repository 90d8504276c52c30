"""The training run, top to bottom: config -> data -> model -> trainer -> outputs.

`run` is `higgs-audio-trainer train` (its docstring shows a command line); `main` trains from a `Config`
and lists the outputs it writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from trainer import dist, errors, fsmode
from trainer.config.options import Config
from trainer.config.values import label
from trainer.errors import ConfigError
from trainer.train import checkpoint as ckpt

log = logging.getLogger("trainer")


def setup_logging(level: str) -> None:
    """Log at `level` on rank 0 and warnings only elsewhere, so N ranks do not print every line N times."""
    logging.basicConfig(
        level=getattr(logging, level.upper()) if dist.is_main() else logging.WARNING,
        format=f"%(asctime)s [rank {dist.rank()}] %(levelname)s %(name)s: %(message)s",
    )


def resolve_resume(cfg: Config) -> str | None:
    """The checkpoint to resume from (`--resume auto|never|PATH`); incomplete ones are removed by rank 0."""
    mode, out = cfg.train.resume, cfg.train.output_dir
    if mode == "never":
        refuse_earlier_checkpoints(out or ".")
        return None
    if mode != "auto":
        path = Path(mode)
        if not ckpt.is_complete(path):
            raise ConfigError(f"{label('resume')}: {mode} is not a complete checkpoint (no {ckpt.MARKER})")
        log.info("resuming from %s at step %d (--resume)", path, ckpt.step_of(path))
        return str(path)
    newest, incomplete = ckpt.newest_complete(out or ".")
    if incomplete and dist.is_main():
        ckpt.remove_incomplete(incomplete)
    if newest is not None:
        log.info("resuming from %s at step %d (newest complete checkpoint in %s)", newest, ckpt.step_of(newest), out)
    return str(newest) if newest else None


def refuse_earlier_checkpoints(out: str) -> None:
    """`--resume never` in an OUTPUT_DIR that holds complete checkpoints: a configuration error.

    The new run would ignore them, and then rotation (`--save_total_limit`), which ranks every complete
    checkpoint by step, would delete this run's own checkpoints before an earlier run's with higher steps,
    and a later `--resume auto` would resume the earlier run. Incomplete ones do not count: nothing
    resumes them, and a save at their step replaces them.
    """
    complete = ckpt.complete_checkpoints(out)
    if not complete:
        return
    shown = ", ".join(p.name for p in complete[-3:])
    more = f"{len(complete) - 3} more and " if len(complete) > 3 else ""
    raise ConfigError(
        f"{label('resume')}: never starts a new run, but OUTPUT_DIR {out} already holds complete checkpoints of "
        f"an earlier run ({more}{shown}), which this run's would be mixed with (--save_total_limit would delete "
        f"this run's own first). Use --resume auto to continue from {complete[-1].name}, an empty OUTPUT_DIR, "
        f"or delete them"
    )


OUTPUT_DIR_LABEL = label("output_dir")
CACHE_DIR_LABEL = label("cache_dir")


def check_output_dirs(cfg: Config, *, output_dir: bool = True) -> None:
    """Create OUTPUT_DIR (with `output_dir`) and CACHE_DIR (when given) and check both are writable.

    Raises `ConfigError` naming the option, the path and why (exit code 2).

    First thing in `train` and `prepare`, before any tokenizer or model loads: a path under a regular file or
    on a read-only volume would otherwise end, minutes later, in a traceback at the first write. `prepare`
    writes only the code cache, so with a CACHE_DIR it leaves OUTPUT_DIR alone.
    """
    if output_dir:
        assert cfg.train.output_dir
        fsmode.ensure_writable_dir(cfg.train.output_dir, OUTPUT_DIR_LABEL)
    if cfg.data.cache_dir:
        fsmode.ensure_writable_dir(cfg.data.cache_dir, CACHE_DIR_LABEL)


def tidy_output_dir(out: str) -> None:
    """What a killed run left in OUTPUT_DIR and no later run would clean up (rank 0, before anything is read).

    The temporary copies of a final adapter or model it was writing, and a previous one it had moved aside (put back if
    the final output is missing). Incomplete checkpoints are `resolve_resume`'s to remove.
    """
    if dist.is_main():
        ckpt.recover_final_outputs(out)


def main(cfg: Config) -> dict[str, float]:
    """Train as configured; returns the final training metrics.

    Outputs (`--output_dir out`): `out/checkpoint-N/` (adapter in `lora_adapters/`, optimizer, scheduler, RNG
    and trainer state, completeness marker) and the final adapter in `out/lora_adapters/` (full fine-tuning:
    the model in `out/model/`).

    On SIGTERM/SIGINT every rank stops at the same step end after saving a checkpoint there, and
    `errors.Stopped` (exit code 128 + signal) is raised instead of writing the final adapter.
    """
    from trainer.generate.sampler import SampleCallback, build_sampler
    from trainer.metrics.callback import MetricsCallback, status_of
    from trainer.train.job_events import CheckpointEvents
    from trainer.train.progress import ProgressReport
    from trainer.train.signals import StopOnSignal

    metrics = MetricsCallback.from_config(cfg)  # first, so that a run failing in preparation reports it
    events = CheckpointEvents.from_config(cfg)  # rank 0's checkpoint Events on the job; None off a cluster
    code = errors.FAILURE
    try:
        with StopOnSignal(cfg.train.save_on_signal, cfg.train.signal_save_timeout_seconds) as stop:
            prompts = SampleCallback.prompts_from_config(cfg)  # a bad prompts file fails before anything loads
            trainer, tokenizer, resume = build(cfg)
            trainer.add_callback(stop)
            trainer.add_callback(metrics)
            ProgressReport.attach(trainer)  # rank 0: a bar on a terminal, `step N/M, loss, eta` lines in a log
            if events is not None:
                trainer.add_callback(events)
            sampler = build_sampler(cfg, trainer, tokenizer, prompts)
            if sampler is not None:
                trainer.add_callback(sampler)
            trainer.warn_if_short_of_disk()
            result = trainer.train(resume_from_checkpoint=resume)
            stop.raise_if_stopped()
            save_final(trainer, cfg, tokenizer)
        code = errors.OK
    except BaseException as err:
        code, _ = errors.classify(err)  # the code the process will exit with, pushed before it leaves
        raise
    finally:
        metrics.finish(status_of(code), code)  # never raises; retries the final push, deletes the group if asked to
        if events is not None:
            events.close()  # bounded wait for the last checkpoint Event
    return result.metrics


def build(cfg: Config):
    """Everything up to `trainer.train()`: (trainer, text tokenizer, checkpoint to resume from)."""
    import torch
    from transformers import set_seed

    from trainer.encode.collator import Collator, Layout, SampleDataset
    from trainer.encode.prepare import open_cache, prepare_data
    from trainer.model.assemble import assemble, count_parameters
    from trainer.model.load import load_audio_tokenizer, load_model, load_parts
    from trainer.train.args import build_training_args
    from trainer.train.trainer import HiggsAudioTrainer

    setup_logging(cfg.train.log_level)
    m, t = cfg.model, cfg.train
    assert t.output_dir and m.model_path and m.audio_tokenizer_path
    check_output_dirs(cfg)
    parts = load_parts(m)  # JSON and the text tokenizer: a wrong directory fails before anything heavy

    on_gpu = torch.cuda.is_available()
    bf16 = on_gpu if m.bf16 == "auto" else m.bf16 == "true"
    if bf16 and not on_gpu:
        raise ConfigError(f"{label('bf16')}: bfloat16 training needs a GPU here; use BF16=auto or false on CPU")
    if t.fsdp_cpu_offload and not on_gpu:
        raise ConfigError(f"{label('fsdp_cpu_offload')}: moves FSDP's shards off a GPU, and this process has none; "
                          "set FSDP_CPU_OFFLOAD=false on CPU")
    args = build_training_args(cfg, use_cpu=not on_gpu, bf16=bf16)  # also starts the process group
    set_seed(t.seed)
    tidy_output_dir(t.output_dir)
    resume = resolve_resume(cfg)

    tokenizer = parts.tokenizer
    layout = Layout.from_model(parts.model_config, tokenizer)
    device = f"cuda:{dist.local_rank()}" if on_gpu else "cpu"

    data = prepare_data(
        cfg.data,
        evaluate=t.evaluates,
        cache=open_cache(cfg),
        tokenizer=tokenizer,
        layout=layout,
        load_codec=lambda: load_audio_tokenizer(m, device),
        sample_rate=parts.codec_config.sample_rate,
        report_dir=Path(t.output_dir),
    )
    log.info("data: %d training samples, %s evaluation samples, %d bad samples skipped",
             len(data.train), len(data.eval) if data.eval is not None else "no", len(data.bad))
    if on_gpu:
        torch.cuda.empty_cache()  # the audio tokenizer is done; give its memory back

    # LoRA keeps the frozen base in bf16 on GPU (adapters stay fp32); full fine-tuning keeps fp32 masters.
    dtype = torch.bfloat16 if (bf16 and cfg.lora.use_lora) else torch.float32
    # Seeded again here: how much randomness data preparation used depends on the code cache's state and
    # on Python's per-process string hashing, and the weights LoRA initialises must depend on --seed alone.
    set_seed(t.seed)
    model = assemble(load_model(m, dtype), m, cfg.lora)
    trainable, total = count_parameters(model)
    log.info("parameters: %d trainable of %d", trainable, total)

    text_labels = m.use_text_head
    trainer = HiggsAudioTrainer(
        model=model,
        args=args,
        train_dataset=SampleDataset(data.train, layout, text_labels),
        eval_dataset=SampleDataset(data.eval, layout, text_labels) if data.eval is not None else None,
        data_collator=Collator(layout, text_labels),
        layout=layout,
        frame_rate=parts.codec_config.frame_rate,
        text_loss_weight=m.text_loss_weight,
        evaluate=t.evaluates,
        keep_checkpoints=t.save_total_limit,
        skipped_samples=len(data.bad),
        group_by_length=cfg.data.group_by_length,
        max_tokens_per_batch=t.max_tokens_per_batch,
        nan_policy=t.nan_policy,
        async_save=t.async_save,
    )
    return trainer, tokenizer, resume


def save_final(trainer, cfg: Config, tokenizer) -> None:
    """Final adapter (or model) into `output_dir`, swapped in atomically by rank 0.

    Out of disk space, the partial copy is removed, an earlier final output and every checkpoint stay
    whole, and the run ends with `errors.DISK_FULL`: a restart resumes from the last checkpoint and
    writes the final output again.
    """
    from trainer.train.fsdp import full_state_dict

    out = Path(cfg.train.output_dir or ".")
    kind = "adapter" if cfg.lora.use_lora else "model"
    final = out / (ckpt.ADAPTER_DIR if cfg.lora.use_lora else ckpt.MODEL_DIR)
    # Under FSDP each rank holds a shard: every rank takes part in gathering the whole, rank 0 writes it.
    state_dict = full_state_dict(trainer)
    if trainer.args.should_save:
        try:
            with ckpt.atomic_dir(final) as tmp:
                trainer.accelerator.unwrap_model(trainer.model).save_pretrained(
                    str(tmp), safe_serialization=True, state_dict=state_dict
                )
                if not cfg.lora.use_lora:
                    tokenizer.save_pretrained(str(tmp))
        except Exception as err:
            full = ckpt.out_of_space(
                err, final, trainer.saved_weight_bytes(), what=f"the final {kind}",
                kept=f"the partial copy is removed; an earlier {final.name}/ and every checkpoint are intact",
            )
            if full is None:
                raise
            raise errors.Stopped(errors.DISK_FULL, full) from err
        log.info("final %s written to %s", kind, final)
    dist.barrier()


def run(argv: Sequence[str]) -> int:
    r"""`higgs-audio-trainer train`: options from flags, env vars and YAML, then `main`.

        torchrun --nproc_per_node=2 -m trainer train \
            --model_path tiny/model --audio_tokenizer_path tiny/audio_tokenizer \
            --train_data_file examples/demo_data/train.json --output_dir out --use_lora --disable_eval

    Every flag is also an environment variable (`USE_LORA=true`, ...).
    """
    from trainer.config.cli import parse_train_args

    main(parse_train_args(argv, os.environ))
    return errors.OK
