"""Turn a loaded Higgs Audio v2 model into the one that trains.

LoRA adapters, or full fine-tuning with optional freezing. Apart from loading, so that training, the benchmarks and
generation assemble alike.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from trainer.config.options import LoraArgs, ModelArgs
from trainer.config.values import label
from trainer.errors import ConfigError

log = logging.getLogger(__name__)

# Names of the model's audio-specific parameters: the dual-FFN audio path, audio embedding and head.
AUDIO_PARAM_PATTERN = re.compile(
    r"(audio_mlp|audio_input_layernorm|audio_post_attention_layernorm|embed_audio_tokens|audio_lm_head)"
)
MODULES_TO_SAVE = {
    "audio_head": "audio_lm_head",
    # The inner embedding: naming the wrapper would match both it and the embedding and break reloading.
    "audio_embedding": "embed_audio_tokens.embed_audio_tokens",
}


def apply_freezing(model: Any, args: ModelArgs) -> None:
    """Full fine-tuning options: freeze the text path or the text embedding matrix."""
    if args.freeze_audio_tower or args.freeze_audio_encoder_proj:
        log.warning(
            "freeze_audio_tower / freeze_audio_encoder_proj: Higgs Audio v2 (generation variant) has no audio "
            "encoder, so these options change nothing"
        )
    if args.freeze_llm:
        for name, param in model.named_parameters():
            if not AUDIO_PARAM_PATTERN.search(name):
                param.requires_grad_(False)
    if args.freeze_text_embeddings:
        model.model.embed_tokens.weight.requires_grad_(False)


def lora_config(args: LoraArgs) -> Any:
    """The peft `LoraConfig` for our options (a 're:' target is a regular expression)."""
    from peft import LoraConfig

    targets: str | list[str] = list(args.lora_target_modules)
    if len(targets) == 1 and targets[0].startswith("re:"):
        targets = targets[0][3:]
    return LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        modules_to_save=[MODULES_TO_SAVE[m] for m in args.lora_modules_to_save] or None,
        bias="none",
    )


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence the deprecation warning peft triggers whenever it wraps a model.

    It reads transformers' `is_gradient_checkpointing`, and the warning, shown in every LoRA run, is nothing a user can
    act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
        yield


def apply_lora(model: Any, args: LoraArgs) -> Any:
    """Wrap the model in peft LoRA; every base weight stays frozen."""
    from peft import get_peft_model

    try:
        with quiet_peft():
            peft_model = get_peft_model(model, lora_config(args))
    except ValueError as err:
        raise ConfigError(f"{label('lora_target_modules')}: {err}") from None
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("LoRA: %d trainable parameters of %d (%.3f%%)", trainable, total, 100 * trainable / max(total, 1))
    return peft_model


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def keep_audio_embeddings_in_text_dtype(model: Any) -> None:
    """Cast the summed audio-code embeddings to the dtype of the text embeddings they are scattered into.

    transformers' `HiggsAudioV2Embeddings` adds up the codebooks' embeddings with `sum`, which CUDA autocast
    runs in float32; scattering that float32 result into bf16 text embeddings then fails (`masked_scatter_:
    expected self and source to have same dtypes`), so every bf16 model under autocast (LoRA on GPU, whose
    frozen base is bf16) would crash at its first step. The sum stays float32; only its result is cast.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = inner.model.embed_tokens

    def cast(module: Any, args: Any, output: Any) -> Any:
        return output.to(text.weight.dtype)

    inner.model.embed_audio_tokens.register_forward_hook(cast)


def assemble(model: Any, model_args: ModelArgs, lora_args: LoraArgs) -> Any:
    """The model to train, assembled from the options.

    Routed with one token split per forward (`--precomputed_routing`), then wrapped in LoRA (`--use_lora`) or
    with the freezing options applied.
    """
    keep_audio_embeddings_in_text_dtype(model)
    if model_args.precomputed_routing:  # before LoRA: peft then wraps the routed layers' own Linear modules
        from trainer.model.routing import install_routing

        install_routing(model)
    if lora_args.use_lora:
        return apply_lora(model, lora_args)
    apply_freezing(model, model_args)
    return model
