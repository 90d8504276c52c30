"""Our options -> transformers' `TrainingArguments`: the one place the two vocabularies meet."""

from __future__ import annotations

from typing import Any

from transformers import TrainingArguments

from trainer import dist as ranks
from trainer.config.options import Config
from trainer.config.values import run_name

_HAS_MP_CONTEXT = "dataloader_multiprocessing_context" in TrainingArguments.__dataclass_fields__

# The unit FSDP shards and gathers at a time: one decoder layer of transformers' modeling_higgs_audio_v2.py
# (its attention, both FFNs and their norms). The embeddings and heads outside the layers form the root unit.
DECODER_LAYER = "HiggsAudioV2DecoderLayer"


def fsdp_config(cfg: Config) -> dict[str, Any] | None:
    """`TrainingArguments.fsdp_config` for `--fsdp`, or None without it.

    FSDP2 (`fully_shard`), full shard (each layer's weights are freed again after its forward), one unit per
    decoder layer, and FULL_STATE_DICT checkpoints: rank 0 writes the gathered model and optimizer state, which
    load on any number of processes (a sharded state dict would tie a resume to the same world size).
    """
    t = cfg.train
    if not t.fsdp:
        return None
    return {
        "version": 2,
        "reshard_after_forward": True,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": [DECODER_LAYER],
        "state_dict_type": "FULL_STATE_DICT",
        "cpu_offload": t.fsdp_cpu_offload,
        "cpu_ram_efficient_loading": False,  # every rank loads the weights; the Trainer shards them in prepare
    }


def fsdp_mixed_precision(cfg: Config, bf16: bool) -> dict[str, Any] | None:
    """The FSDP mixed-precision policy: bfloat16 compute, gradients reduced in `--fsdp_reduce_dtype`.

    Without it accelerate reduces in the compute dtype, bfloat16: a sum over ranks rounded to 8 bits of
    mantissa, where DDP sums in float32. The sharded master weights stay in the dtype they were loaded in.
    """
    if not (cfg.train.fsdp and bf16):
        return None
    import torch

    reduce = torch.float32 if cfg.train.fsdp_reduce_dtype == "float32" else torch.bfloat16
    return {"param_dtype": torch.bfloat16, "reduce_dtype": reduce}


def build_training_args(cfg: Config, *, use_cpu: bool, bf16: bool) -> TrainingArguments:
    """Our options -> `TrainingArguments`. Evaluation off means no strategy, no eval steps, no best model."""
    t, d = cfg.train, cfg.data
    eval_on = t.evaluates
    report_to = [r.strip() for r in t.report_to.split(",") if r.strip()] or ["none"]
    # Newer transformers renamed gradient checkpointing to activation checkpointing.
    ckpt_name = (
        "activation_checkpointing"
        if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
        else "gradient_checkpointing"
    )
    if use_cpu:
        ranks.start_cpu_group(t.ddp_timeout)  # on GPU, transformers starts the group with the timeout itself
    checkpointing = {}
    if cfg.model.gradient_checkpointing:
        checkpointing = {ckpt_name: True, f"{ckpt_name}_kwargs": {"use_reentrant": False}}
    fsdp = fsdp_config(cfg)
    args = TrainingArguments(
        output_dir=t.output_dir,
        run_name=run_name(cfg),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        # transformers reads a value below 1 as a fraction of the run's steps
        warmup_steps=t.warmup_ratio if t.warmup_steps < 0 else t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # rotation happens after the completeness marker (see _save_checkpoint)
        eval_strategy="steps" if eval_on else "no",
        eval_steps=t.eval_steps if eval_on else None,
        load_best_model_at_end=t.load_best_model_at_end and eval_on,
        metric_for_best_model="eval_loss" if (t.load_best_model_at_end and eval_on) else None,
        greater_is_better=False if (t.load_best_model_at_end and eval_on) else None,
        seed=t.seed,
        data_seed=t.seed,
        bf16=bf16,
        use_cpu=use_cpu,
        report_to=report_to,
        **checkpointing,
        dataloader_num_workers=d.dataloader_num_workers,
        # Not persistent: a persistent worker pool draws its base seed from the global RNG once, on first use,
        # which after a resume (the first epoch runs on a separate, batch-skipping loader) falls at the next
        # epoch's start and shifts that epoch's order and dropout against an uninterrupted run.
        dataloader_persistent_workers=False,
        # Workers are spawned, not forked: forking a process that runs gloo/NCCL and OpenMP threads can
        # deadlock the child, and non-persistent workers fork again every epoch.
        **({"dataloader_multiprocessing_context": "spawn"} if d.dataloader_num_workers > 0 and _HAS_MP_CONTEXT else {}),
        remove_unused_columns=False,
        label_names=["audio_labels"],
        prediction_loss_only=True,
        ddp_find_unused_parameters=False,
        fsdp=fsdp is not None,
        fsdp_config=fsdp,
        ddp_timeout=t.ddp_timeout,  # also the store's timeout, which bounds `dist.barrier`
        log_level="info" if t.log_level == "debug" else "warning",  # transformers is chatty at info
        disable_tqdm=True,
        logging_nan_inf_filter=False,  # a NaN or infinite loss must show in the logs and metrics, not be hidden
    )
    policy = fsdp_mixed_precision(cfg, bf16)
    if policy is not None:  # TrainingArguments has no field for it; the Trainer builds its FSDP plugin from these
        args.fsdp_plugin_args["mixed_precision_policy"] = policy
    return args
