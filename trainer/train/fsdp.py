"""FSDP under the Trainer: what `--fsdp` needs beyond the `fsdp_config` of `trainer.train.args`.

- accelerate turns its FSDP plugin on for accelerator devices only: on CPU processes (gloo) it silently trains
  with DDP instead. `enable_on_cpu` turns it on there too, so that the same FSDP2 code (`fully_shard`, the
  reduce-scatter of gradients, the gathered state dicts) runs, and is tested, on CPU.
- a sharded model's weights live in pieces on every rank: writing the final model is a collective
  (`full_state_dict`), not rank 0's `save_pretrained` of its own shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainer.config.values import label
from trainer.errors import ConfigError
from trainer.train import checkpoint as ckpt


def enable_on_cpu(trainer: Any) -> None:
    """Give the Trainer's accelerator the FSDP plugin it dropped on CPU processes, before anything is prepared.

    Raises:
        ConfigError: accelerate dropped the plugin on a GPU: the process was not started by torchrun (or
            `higgs-audio-trainer launch`), so there is no process group to shard over.
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if trainer.is_fsdp_enabled or not trainer.args.fsdp:
        return
    state = trainer.accelerator.state
    if state.distributed_type not in (DistributedType.MULTI_CPU, DistributedType.NO) or torch.cuda.is_available():
        raise ConfigError(
            f"{label('fsdp')}: accelerate set up {state.distributed_type} instead of FSDP; start the run with "
            "higgs-audio-trainer launch (or torchrun), which FSDP needs even on one GPU"
        )
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    state.distributed_type = DistributedType.FSDP
    # Each later `AcceleratorState()` (the Trainer makes some, on resume too) copies the process state's type
    # over its own: without this, rank 0 alone would load a resumed checkpoint and the ranks' collectives
    # would no longer pair up.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True


def full_state_dict(trainer: Any) -> dict[str, torch.Tensor] | None:
    """The whole model's weights, gathered from every rank's shard; call on every rank (a collective).

    Returns:
        The full state dict (on rank 0; accelerate gives the others an empty one), or None without FSDP,
        where every rank's model is whole.
    """
    if not trainer.is_fsdp_enabled:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # accelerate's `get_state_dict` asks for the same with cpu_offload; on a CPU process the gathered tensors it
    # returns can share storage FSDP frees again (safetensors then fails on an invalid storage): copies here.
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(trainer.model, options=options)
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def save_gathered(trainer: Any, out: Path, peft: Any) -> None:
    """Save a sharded model whole: every rank gathers (a collective), rank 0 writes.

    Args:
        trainer (`HiggsAudioTrainer`):
            The trainer whose FSDP-wrapped model is saved.
        out (`Path`):
            The checkpoint or output directory.
        peft (`PeftModel | None`):
            With LoRA, the adapter's model: only the adapter is written (under `lora_adapters/`).
    """
    state = full_state_dict(trainer)
    if not trainer.args.should_save:
        return
    if peft is not None:
        peft.save_pretrained(str(out / ckpt.ADAPTER_DIR), safe_serialization=True, state_dict=state)
    else:
        trainer._save(str(out), state_dict=state)
